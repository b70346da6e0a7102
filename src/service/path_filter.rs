//! Path filters: globs over socket paths (`/socket.io/*`, `/ws`, `*`). `*` matches any run of
//! characters (including `/`), `?` one character; everything else literally.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter(Box<str>);

impl PathFilter {
    /// Accepts any pattern up to 1 KiB (longer patterns are refused by the admin API).
    pub fn new(pattern: &str) -> PathFilter {
        PathFilter(pattern.into())
    }

    pub fn any() -> PathFilter {
        PathFilter("*".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is it `*` (every path)?
    pub fn is_any(&self) -> bool {
        &*self.0 == "*"
    }

    /// The filter as history keeps it: `None` for `*` (every path, no allocation held).
    pub fn narrowing(self) -> Option<PathFilter> {
        (!self.is_any()).then_some(self)
    }

    pub fn matches(&self, path: &str) -> bool {
        glob(self.0.as_bytes(), path.as_bytes())
    }
}

/// Iterative glob with single-star backtracking: O(pattern × text) worst case, no recursion.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let f = PathFilter::new("/socket.io/*");
        assert!(f.matches("/socket.io/"));
        assert!(f.matches("/socket.io/x/y"));
        assert!(!f.matches("/ws"));
        assert!(PathFilter::new("/ws").matches("/ws"));
        assert!(!PathFilter::new("/ws").matches("/ws/a"));
        assert!(PathFilter::any().matches(""));
        assert!(PathFilter::any().matches("/anything"));
        assert!(PathFilter::new("/a?c").matches("/abc"));
        assert!(PathFilter::new("*/x*").matches("/a/b/x1"));
        assert!(!PathFilter::new("*/x").matches("/a/b/x1"));
        assert!(PathFilter::any().is_any() && PathFilter::any().narrowing().is_none());
        assert_eq!(
            PathFilter::new("/a*").narrowing(),
            Some(PathFilter::new("/a*"))
        );
        let long = "a".repeat(1000);
        assert!(!PathFilter::new(&"*a".repeat(30)).matches(&(long + "b")));
    }
}
