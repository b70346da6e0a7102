//! The `websockets.enabled` config cascade: server < context set < context < user; the most
//! specific scope that says something wins.
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
    /// Per user: `"1:42" = true` (keys are `context:user`).
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

/// The cascade compiled for lookups without string formatting on the upgrade path.
#[derive(Debug, Clone, Default)]
pub struct Cascade {
    server: bool,
    sets: HashMap<u32, bool>,
    contexts: HashMap<u32, bool>,
    users: HashMap<(u32, u32), bool>,
}

impl Cascade {
    pub fn compile(cfg: &WebsocketsConfig) -> Result<Cascade, String> {
        let mut sets = HashMap::new();
        for set in &cfg.context_sets {
            for &c in &set.contexts {
                sets.entry(c).or_insert(set.enabled);
            }
        }
        let mut contexts = HashMap::new();
        for (k, &v) in &cfg.contexts {
            let c: u32 = k
                .parse()
                .map_err(|_| format!("websockets.contexts: {k:?} is not a context id"))?;
            contexts.insert(c, v);
        }
        let mut users = HashMap::new();
        for (k, &v) in &cfg.users {
            let parsed = k
                .split_once(':')
                .and_then(|(c, u)| Some((c.parse().ok()?, u.parse().ok()?)));
            let key = parsed
                .ok_or_else(|| format!("websockets.users: {k:?} must be \"context:user\""))?;
            users.insert(key, v);
        }
        Ok(Cascade {
            server: cfg.enabled,
            sets,
            contexts,
            users,
        })
    }

    pub fn enabled(&self, context: u32, user: u32) -> bool {
        if let Some(&v) = self.users.get(&(context, user)) {
            return v;
        }
        if let Some(&v) = self.contexts.get(&context) {
            return v;
        }
        if let Some(&v) = self.sets.get(&context) {
            return v;
        }
        self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_wins() {
        let cfg: WebsocketsConfig = toml::from_str(
            r#"
            enabled = true
            context_sets = [{ name = "beta", contexts = [2, 3], enabled = false }]
            contexts = { "3" = true }
            users = { "2:7" = true, "1:9" = false }
            "#,
        )
        .unwrap();
        let c = Cascade::compile(&cfg).unwrap();
        assert!(c.enabled(1, 1)); // server
        assert!(!c.enabled(1, 9)); // user
        assert!(!c.enabled(2, 1)); // context set
        assert!(c.enabled(2, 7)); // user beats set
        assert!(c.enabled(3, 1)); // context beats set
        let bad: WebsocketsConfig = toml::from_str(r#"users = { "x" = true }"#).unwrap();
        assert!(Cascade::compile(&bad).is_err());
    }
}
