//! The `websockets.enabled` config cascade: server < context set < context < user; the most
//! specific scope that says something wins.
use crate::config::WebsocketsConfig;
use crate::service::user_id::UserId;
use std::collections::HashMap;

/// The cascade compiled for lookups without string formatting on the upgrade path.
#[derive(Debug, Clone, Default)]
pub struct Cascade {
    server: bool,
    sets: HashMap<u32, bool>,
    contexts: HashMap<u32, bool>,
    users: HashMap<(u32, UserId), bool>,
}

impl Cascade {
    pub fn compile(cfg: &WebsocketsConfig) -> Result<Cascade, String> {
        let mut sets = HashMap::new();
        for set in &cfg.context_sets {
            for &c in &set.contexts {
                sets.entry(c).or_insert(set.enabled);
            }
        }
        let contexts = cfg.context_overrides()?;
        let users = cfg
            .user_overrides()?
            .into_iter()
            .map(|((context, user), v)| match UserId::parse(&user) {
                Ok(user) => Ok(((context, user), v)),
                Err(e) => Err(format!("websockets.users: \"{context}:{user}\": {e}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Cascade {
            server: cfg.enabled,
            sets,
            contexts,
            users,
        })
    }

    pub fn enabled(&self, context: u32, user: &UserId) -> bool {
        if !self.users.is_empty() {
            if let Some(&v) = self.users.get(&(context, user.clone())) {
                return v;
            }
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
            users = { "2:7" = true, "1:9" = false, "1:alice:x" = false }
            "#,
        )
        .unwrap();
        let c = Cascade::compile(&cfg).unwrap();
        assert!(c.enabled(1, &1.into())); // server
        assert!(!c.enabled(1, &9.into())); // user
        assert!(!c.enabled(2, &1.into())); // context set
        assert!(c.enabled(2, &7.into())); // user beats set
        assert!(c.enabled(3, &1.into())); // context beats set
        assert!(!c.enabled(1, &UserId::parse("alice:x").unwrap())); // a string user
        assert!(c.enabled(1, &UserId::parse("alice").unwrap()));
        let bad: WebsocketsConfig = toml::from_str(r#"users = { "x" = true }"#).unwrap();
        assert!(Cascade::compile(&bad).is_err());
        let bad: WebsocketsConfig = toml::from_str(r#"users = { "1:" = true }"#).unwrap();
        assert!(Cascade::compile(&bad).is_err());
        let long = format!("users = {{ \"1:{}\" = true }}", "x".repeat(129));
        let bad: WebsocketsConfig = toml::from_str(&long).unwrap();
        let e = Cascade::compile(&bad).unwrap_err();
        assert!(e.contains("129 bytes"), "{e}");
    }
}
