//! The presence directory, sans-IO: which other nodes hold sockets of which (context, user),
//! per socket path, and how many.
//!
//! Sharded like the sockets: each core keeps the entries of the users it owns, so a push or a
//! count consults one core's plain map, with no lock. Entries arrive over the link as absolute
//! per-user updates ([`UserPresence`]) and are dropped wholesale when a node goes away.
//!
//! Memory: one map entry per (user, node holding it), about 64 bytes plus 8 per distinct path,
//! so it grows with the users that have sockets on other nodes times the nodes they are on,
//! never with the number of pushes. It is bounded by `max_entries` (per core). Past the bound,
//! updates from a node are not recorded; that node is then marked overflowed and pushes for
//! users the directory does not know are sent to it anyway (the receiver filters), so nothing
//! is lost; counts of those users leave it out until its next re-sync.
use super::wire::UserPresence;
use super::NodeSet;
use crate::service::path_filter::PathFilter;
use std::collections::HashMap;

/// Distinct socket paths remembered; paths beyond get [`ANY_PATH`] (matches every filter).
const MAX_PATHS: usize = 4096;
const ANY_PATH: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    node: u16,
    path: u16,
    sockets: u32,
}

pub struct Directory {
    users: HashMap<(u32, u32), Vec<Entry>>,
    paths: Vec<Box<str>>,
    path_ids: HashMap<Box<str>, u16>,
    entries: usize,
    max_entries: usize,
    /// Nodes with updates that did not fit.
    overflowed: NodeSet,
}

impl Directory {
    pub fn new(max_entries: usize) -> Directory {
        Directory {
            users: HashMap::new(),
            paths: Vec::new(),
            path_ids: HashMap::new(),
            entries: 0,
            max_entries,
            overflowed: NodeSet::EMPTY,
        }
    }

    /// (user, node, path) entries held.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn path_id(&mut self, path: &str) -> u16 {
        if let Some(&id) = self.path_ids.get(path) {
            return id;
        }
        if self.paths.len() >= MAX_PATHS {
            return ANY_PATH;
        }
        let id = self.paths.len() as u16;
        self.paths.push(path.into());
        self.path_ids.insert(path.into(), id);
        id
    }

    fn path_matches(&self, id: u16, filter: &PathFilter) -> bool {
        id == ANY_PATH || filter.matches(&self.paths[id as usize])
    }

    /// Replace what `node` holds of the user with `p`; false if it did not fit.
    pub fn apply(&mut self, node: u16, p: &UserPresence) -> bool {
        let key = (p.context, p.user);
        let mut list = self.users.remove(&key).unwrap_or_default();
        let before = list.len();
        list.retain(|e| e.node != node);
        self.entries -= before - list.len();
        let mut fits = true;
        for (path, sockets) in &p.paths {
            if *sockets == 0 {
                continue;
            }
            if self.entries >= self.max_entries {
                self.overflowed.insert(node);
                fits = false;
                break;
            }
            let path = self.path_id(path);
            match list.iter_mut().find(|e| e.node == node && e.path == path) {
                Some(e) => e.sockets = e.sockets.saturating_add(*sockets),
                None => {
                    list.push(Entry {
                        node,
                        path,
                        sockets: *sockets,
                    });
                    self.entries += 1;
                }
            }
        }
        if !list.is_empty() {
            list.shrink_to_fit();
            self.users.insert(key, list);
        }
        fits
    }

    /// Forget everything `node` holds (it went away, or re-syncs from scratch).
    pub fn drop_node(&mut self, node: u16) {
        let mut removed = 0;
        self.users.retain(|_, list| {
            let before = list.len();
            list.retain(|e| e.node != node);
            removed += before - list.len();
            !list.is_empty()
        });
        self.entries -= removed;
        self.overflowed.remove(node);
    }

    /// Nodes that may hold sockets of the user matching `filter`.
    pub fn nodes_for(&self, context: u32, user: u32, filter: &PathFilter) -> NodeSet {
        match self.users.get(&(context, user)) {
            Some(list) => list
                .iter()
                .filter(|e| self.path_matches(e.path, filter))
                .map(|e| e.node)
                .collect(),
            // Nodes whose updates did not all fit may hold users we do not know.
            None => self.overflowed,
        }
    }

    /// Add each node's matching sockets of the user to `per_node[node]`.
    pub fn count(&self, context: u32, user: u32, filter: &PathFilter, per_node: &mut [u64]) {
        if let Some(list) = self.users.get(&(context, user)) {
            for e in list {
                if self.path_matches(e.path, filter) {
                    if let Some(n) = per_node.get_mut(e.node as usize) {
                        *n += e.sockets as u64;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[u16]) -> NodeSet {
        nodes.iter().copied().collect()
    }

    fn presence(user: u32, paths: &[(&str, u32)]) -> UserPresence {
        UserPresence {
            context: 1,
            user,
            paths: paths.iter().map(|(p, n)| ((*p).into(), *n)).collect(),
        }
    }

    #[test]
    fn updates_replace_a_nodes_entries_and_route_by_path() {
        let mut d = Directory::new(100);
        d.apply(0, &presence(7, &[("/ws", 2), ("/socket.io/", 1)]));
        d.apply(2, &presence(7, &[("/ws", 1)]));
        assert_eq!(d.len(), 3);
        assert_eq!(d.nodes_for(1, 7, &PathFilter::any()), set(&[0, 2]));
        assert_eq!(
            d.nodes_for(1, 7, &PathFilter::new("/socket.io/*")),
            set(&[0])
        );
        assert!(d.nodes_for(1, 8, &PathFilter::any()).is_empty());
        let mut n = [0u64; 3];
        d.count(1, 7, &PathFilter::new("/ws"), &mut n);
        assert_eq!(n, [2, 0, 1]);
        // Absolute: the next update replaces, an empty one removes.
        d.apply(0, &presence(7, &[("/ws", 1)]));
        assert!(d
            .nodes_for(1, 7, &PathFilter::new("/socket.io/*"))
            .is_empty());
        d.apply(0, &presence(7, &[]));
        d.apply(2, &presence(7, &[]));
        assert!(d.is_empty());
        assert!(d.users.is_empty());
    }

    #[test]
    fn a_node_going_away_takes_its_entries() {
        let mut d = Directory::new(100);
        for u in 0..10 {
            d.apply(1, &presence(u, &[("/ws", 1)]));
            d.apply(3, &presence(u, &[("/ws", 1)]));
        }
        d.drop_node(1);
        assert_eq!(d.len(), 10);
        assert_eq!(d.nodes_for(1, 4, &PathFilter::any()), set(&[3]));
    }

    #[test]
    fn bounded_and_overflow_routes_unknown_users_to_the_node() {
        let mut d = Directory::new(2);
        assert!(d.apply(1, &presence(1, &[("/ws", 1)])));
        assert!(d.apply(1, &presence(2, &[("/ws", 1)])));
        assert!(!d.apply(1, &presence(3, &[("/ws", 1)])));
        assert_eq!(d.len(), 2);
        assert_eq!(d.nodes_for(1, 3, &PathFilter::any()), set(&[1]));
        d.drop_node(1);
        assert!(d.overflowed.is_empty());
        assert!(d.nodes_for(1, 3, &PathFilter::any()).is_empty());
    }
}
