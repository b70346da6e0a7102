//! `[websockets]`: the `websockets.enabled` config cascade (server < context set < context <
//! user), as written in the file; `service::cascade` compiles it for lookups.
use serde::Deserialize;
use std::collections::HashMap;

/// `[websockets]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebsocketsConfig {
    /// Server-wide default.
    pub enabled: bool,
    /// Named lists of contexts with a setting for all of them (first matching set wins).
    pub context_sets: Vec<ContextSet>,
    /// Per context: `"1" = false` (keys are context ids).
    pub contexts: HashMap<String, bool>,
    /// Per user: `"1:42" = true`, `"1:alice" = false` (keys are `context:user`, the user a
    /// number or a string user id).
    pub users: HashMap<String, bool>,
}

impl Default for WebsocketsConfig {
    fn default() -> Self {
        WebsocketsConfig {
            enabled: true,
            context_sets: Vec::new(),
            contexts: HashMap::new(),
            users: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextSet {
    pub name: String,
    pub contexts: Vec<u32>,
    pub enabled: bool,
}

impl WebsocketsConfig {
    /// `contexts` with their keys parsed as context ids.
    pub fn context_overrides(&self) -> Result<HashMap<u32, bool>, String> {
        self.contexts
            .iter()
            .map(|(k, &v)| {
                let c: u32 = k
                    .parse()
                    .map_err(|_| format!("websockets.contexts: {k:?} is not a context id"))?;
                Ok((c, v))
            })
            .collect()
    }

    /// `users` with their keys parsed as (context, user).
    /// The user is the text after the first `:` (a number or a string user id, checked by
    /// the cascade: `service::cascade`).
    pub fn user_overrides(&self) -> Result<HashMap<(u32, String), bool>, String> {
        self.users
            .iter()
            .map(|(k, &v)| {
                let parsed = k
                    .split_once(':')
                    .filter(|(_, u)| !u.is_empty())
                    .and_then(|(c, u)| Some((c.parse().ok()?, u.to_string())));
                let key = parsed
                    .ok_or_else(|| format!("websockets.users: {k:?} must be \"context:user\""))?;
                Ok((key, v))
            })
            .collect()
    }
}
