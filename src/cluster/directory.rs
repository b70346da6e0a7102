//! The presence directory, sans-IO: which other nodes hold sockets of which (context, user),
//! per socket path, and how many.
//!
//! Sharded like the sockets: each core keeps the entries of the users it owns, so a push or a
//! count consults one core's plain map, with no lock. Entries arrive over the link as absolute
//! per-user updates ([`UserPresence`]) and are dropped wholesale when a node goes away.
//!
//! Memory (measured by `examples/directory_memory.rs`: resident, allocator slack included):
//! one map slot per user (25 bytes; at the hash table's 44 to 88% load, 30 to 60), which
//! holds a user's only entry inline; a user with more entries adds one exact-size allocation,
//! 8 bytes per entry. Per (user, node) pair with one path: about 35 bytes for 100,000 users on
//! one node each (60 at worst), 22 on 3 of 1,024 nodes, 10 on 64 or on all 1,023 others; a
//! second path per pair adds 8 to 11 (31 for users on one node). So it grows with the users
//! that have sockets on other nodes times the nodes they are on, never with the number of
//! pushes. It is bounded by `max_entries` (user × node × path entries, per core). Past it,
//! updates from a node are not recorded; that node is then marked overflowed and pushes for
//! users the directory does not know are sent to it anyway (the receiver filters), so nothing
//! is lost; counts of those users leave it out until its next re-sync. (Measured with `u32`
//! users; a map slot's key now holds a 24-byte `UserId`, 20 more per user, and a string user
//! longer than 22 bytes shares its heap string with the other keys of that user.)
use super::wire::UserPresence;
use super::NodeSet;
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
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

/// A user's entries, never empty. Most users are on one other node with one path: that
/// entry is kept inline in the map, with no allocation of its own; more are one exact-size
/// allocation, replaced whole by each update (16 bytes either way, asserted below).
#[derive(Debug)]
enum Entries {
    One(Entry),
    Many(Box<[Entry]>),
}

const _: () = assert!(std::mem::size_of::<Entries>() == 16);

impl Entries {
    fn new(list: Vec<Entry>) -> Option<Entries> {
        match *list {
            [] => None,
            [e] => Some(Entries::One(e)),
            _ => Some(Entries::Many(list.into_boxed_slice())),
        }
    }

    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(e) => std::slice::from_ref(e),
            Entries::Many(list) => list,
        }
    }
}

pub struct Directory {
    users: HashMap<(u32, UserId), Entries>,
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

    /// The entries of `list` whose path matches `filter`. The paths are few and shared by
    /// many entries, so each distinct one is matched once per call (four remembered).
    fn matching<'a>(
        &'a self,
        list: &'a [Entry],
        filter: &'a PathFilter,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let any = filter.is_any();
        let mut seen = [(ANY_PATH, false); 4];
        list.iter().filter(move |e| {
            if any || e.path == ANY_PATH {
                return true;
            }
            let slot = &mut seen[e.path as usize % 4];
            if slot.0 != e.path {
                *slot = (e.path, filter.matches(&self.paths[e.path as usize]));
            }
            slot.1
        })
    }

    /// Replace what `node` holds of the user with `p`; false if it did not fit.
    pub fn apply(&mut self, node: u16, p: &UserPresence) -> bool {
        let key = (p.context, p.user.clone());
        let old = self.users.get(&key).map_or(&[][..], Entries::as_slice);
        let others = |e: &&Entry| e.node != node;
        // Sized exactly (short only past the bound or with a path repeated): no growth.
        let kept = old.iter().filter(others).count();
        let adding = p.paths.iter().filter(|(_, n)| *n != 0).count();
        let mut list: Vec<Entry> = Vec::with_capacity(kept + adding);
        list.extend(old.iter().filter(others));
        self.entries -= old.len() - kept;
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
            match list[kept..].iter_mut().find(|e| e.path == path) {
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
        match Entries::new(list) {
            Some(entries) => self.users.insert(key, entries),
            None => self.users.remove(&key),
        };
        fits
    }

    /// Forget everything `node` holds (it went away, or re-syncs from scratch).
    pub fn drop_node(&mut self, node: u16) {
        self.drop_node_except(node, |_| false);
    }

    /// Forget what `node` holds of every user but those `keep` says (a re-sync is over:
    /// what it did not re-send is gone).
    pub fn drop_node_except(&mut self, node: u16, keep: impl Fn(&(u32, UserId)) -> bool) {
        let mut removed = 0;
        self.users.retain(|key, entries| {
            let list = entries.as_slice();
            if list.iter().all(|e| e.node != node) || keep(key) {
                return true;
            }
            let kept: Vec<Entry> = list.iter().filter(|e| e.node != node).copied().collect();
            removed += list.len() - kept.len();
            match Entries::new(kept) {
                Some(rest) => {
                    *entries = rest;
                    true
                }
                None => false,
            }
        });
        self.entries -= removed;
        self.overflowed.remove(node);
    }

    /// Nodes that may hold sockets of the user matching `filter`.
    pub fn nodes_for(&self, context: u32, user: &UserId, filter: &PathFilter) -> NodeSet {
        match self.users.get(&(context, user.clone())) {
            Some(entries) => self
                .matching(entries.as_slice(), filter)
                .map(|e| e.node)
                .collect(),
            // Nodes whose updates did not all fit may hold users we do not know.
            None => self.overflowed,
        }
    }

    /// Add each node's matching sockets of the user to `per_node[node]`.
    pub fn count(&self, context: u32, user: &UserId, filter: &PathFilter, per_node: &mut [u64]) {
        if let Some(entries) = self.users.get(&(context, user.clone())) {
            for e in self.matching(entries.as_slice(), filter) {
                if let Some(n) = per_node.get_mut(e.node as usize) {
                    *n += e.sockets as u64;
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
            user: user.into(),
            paths: paths.iter().map(|(p, n)| ((*p).into(), *n)).collect(),
        }
    }

    #[test]
    fn updates_replace_a_nodes_entries_and_route_by_path() {
        let mut d = Directory::new(100);
        d.apply(0, &presence(7, &[("/ws", 2), ("/socket.io/", 1)]));
        d.apply(2, &presence(7, &[("/ws", 1)]));
        assert_eq!(d.len(), 3);
        assert_eq!(d.nodes_for(1, &7.into(), &PathFilter::any()), set(&[0, 2]));
        assert_eq!(
            d.nodes_for(1, &7.into(), &PathFilter::new("/socket.io/*")),
            set(&[0])
        );
        assert!(d.nodes_for(1, &8.into(), &PathFilter::any()).is_empty());
        let mut n = [0u64; 3];
        d.count(1, &7.into(), &PathFilter::new("/ws"), &mut n);
        assert_eq!(n, [2, 0, 1]);
        // Absolute: the next update replaces, an empty one removes.
        d.apply(0, &presence(7, &[("/ws", 1)]));
        assert!(d
            .nodes_for(1, &7.into(), &PathFilter::new("/socket.io/*"))
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
        assert_eq!(d.nodes_for(1, &4.into(), &PathFilter::any()), set(&[3]));
    }

    #[test]
    fn paths_sharing_a_remembered_match_and_lists_growing_and_shrinking() {
        let mut d = Directory::new(100);
        // Path ids 0..=5: 1 and 5 share a slot of `matching`'s memory.
        let paths: Vec<String> = (0..6).map(|i| format!("/a{i}")).collect();
        for (node, path) in paths.iter().enumerate() {
            d.apply(node as u16 + 1, &presence(7, &[(path, node as u32 + 1)]));
        }
        assert_eq!(d.len(), 6);
        assert_eq!(
            d.nodes_for(1, &7.into(), &PathFilter::new("/a5")),
            set(&[6])
        );
        assert_eq!(
            d.nodes_for(1, &7.into(), &PathFilter::new("/a1")),
            set(&[2])
        );
        let mut n = [0u64; 7];
        d.count(1, &7.into(), &PathFilter::new("/a?"), &mut n);
        assert_eq!(n, [0, 1, 2, 3, 4, 5, 6]);
        for node in 2..=6 {
            d.drop_node(node);
        }
        assert!(matches!(d.users[&(1, 7.into())], Entries::One(_)));
        assert_eq!(d.nodes_for(1, &7.into(), &PathFilter::any()), set(&[1]));
        d.apply(1, &presence(7, &[("/a0", 1), ("/a1", 0), ("/a0", 2)]));
        let mut n = [0u64; 2];
        d.count(1, &7.into(), &PathFilter::any(), &mut n);
        assert_eq!((n, d.len()), ([0, 3], 1));
        d.drop_node(1);
        assert!(d.is_empty() && d.users.is_empty());
    }

    #[test]
    fn bounded_and_overflow_routes_unknown_users_to_the_node() {
        let mut d = Directory::new(2);
        assert!(d.apply(1, &presence(1, &[("/ws", 1)])));
        assert!(d.apply(1, &presence(2, &[("/ws", 1)])));
        assert!(!d.apply(1, &presence(3, &[("/ws", 1)])));
        assert_eq!(d.len(), 2);
        assert_eq!(d.nodes_for(1, &3.into(), &PathFilter::any()), set(&[1]));
        d.drop_node(1);
        assert!(d.overflowed.is_empty());
        assert!(d.nodes_for(1, &3.into(), &PathFilter::any()).is_empty());
    }
}
