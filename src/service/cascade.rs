//! The `websockets.enabled` config cascade: server < context set < context < user; the most
//! specific scope that says something wins.
use crate::config::WebsocketsConfig;
use std::collections::HashMap;

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
        let contexts = cfg.context_overrides()?;
        let users = cfg.user_overrides()?;
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
