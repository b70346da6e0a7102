//! `[cluster]`: the QUIC link between nodes and how nodes find each other.
use serde::Deserialize;
use std::net::SocketAddr;

/// `[cluster]`: the link between nodes and how nodes find each other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id; its certificate must name it (`ringwire cluster certs`). With
    /// `discovery = "nats"` it is also the node's key in the bucket: letters, digits, `-`
    /// and `_`.
    pub node_id: String,
    /// QUIC (UDP) address of the cluster link.
    pub listen: SocketAddr,
    /// `static`: the nodes are `peers`. `nats`: nodes register in a JetStream key-value
    /// bucket on `[nats] url` and find each other there (`peers` must be empty).
    #[serde(default)]
    pub discovery: Discovery,
    /// The address the other nodes dial (nats discovery). Default: `listen`, which must then
    /// name an interface (not 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The key-value bucket of the members (nats discovery); every node of a cluster uses
    /// the same, so two clusters on one NATS keep apart by its name.
    #[serde(default = "default_members_bucket")]
    pub members_bucket: String,
    /// How long a member's entry lives without a refresh (it is refreshed every third of
    /// this): a node that stopped refreshing (crash, NATS unreachable from it) is forgotten
    /// this long after its link went down. 5 s: longer than a refresh lost now and then, and
    /// the link's own 3 s idle timeout already stops routing to a crashed node.
    #[serde(default = "default_member_ttl_ms")]
    pub member_ttl_ms: u64,
    /// Longest a draining node waits for its peers to confirm they stopped routing to it
    /// before it closes its sockets. 1 s: a peer confirms within milliseconds; a peer that
    /// does not is down or partitioned and routes nothing anyway.
    #[serde(default = "default_leave_wait_ms")]
    pub leave_wait_ms: u64,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// PEM files for the link's mutual TLS: the cluster CA, this node's certificate, its key.
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Presence directory entries (user × node × path) this node keeps, over all cores.
    /// At most about 60 bytes each (a user on one other node: 30 to 60; 8 to 22 each for
    /// users on several, measured by `examples/directory_memory.rs`): the default 10,000,000
    /// bounds the directory under 600 MB.
    #[serde(default = "default_presence_entries")]
    pub max_presence_entries: usize,
}

fn default_presence_entries() -> usize {
    10_000_000
}

fn default_members_bucket() -> String {
    "ringwire_nodes".into()
}

fn default_member_ttl_ms() -> u64 {
    5_000
}

fn default_leave_wait_ms() -> u64 {
    1_000
}

/// `[cluster] discovery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// The peers are listed in `[cluster] peers`.
    #[default]
    Static,
    /// Nodes register in a NATS JetStream key-value bucket and watch it.
    Nats,
}

impl ClusterConfig {
    /// The address other nodes dial.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: String,
    pub addr: SocketAddr,
}
