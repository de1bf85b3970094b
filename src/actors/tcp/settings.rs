//! The knobs of the TCP transport, shared by both sides of a connection: who may talk (cluster
//! name and token), how big a frame may be, and how long to wait for what.

use std::time::Duration;

use super::tls::TlsConfig;

/// Settings of one node's (or one client's) TCP transport.
///
/// Both ends of a connection must agree on `cluster` and `token`; the rest is local policy.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// Name of the cluster; a peer of another cluster is refused at the handshake.
    pub cluster: String,
    /// Shared secret every connection presents at the handshake. Without `tls` it travels in
    /// the clear: it keeps out strangers and misconfigured nodes, it is not encryption.
    pub token: String,
    /// Mutual TLS on every connection (`None`: plain TCP, for loopback development).
    pub tls: Option<TlsConfig>,
    /// Largest frame (length prefix excluded) either side accepts or sends.
    pub max_frame: usize,
    /// A call on the control lane that has no reply after this long fails `Unreachable`.
    pub call_timeout: Duration,
    /// The same for the bulk lane, where large requests (snapshots) travel.
    pub bulk_call_timeout: Duration,
    /// Limit on opening a TCP connection.
    pub connect_timeout: Duration,
    /// Limit on the whole handshake, on both sides: a silent connection is dropped after it.
    /// A handshake is one round trip, so this can be short.
    pub handshake_timeout: Duration,
    /// Once the first byte of a frame has arrived, the rest must follow within this long.
    pub frame_timeout: Duration,
    /// First pause after a failed connection attempt; it doubles on each further failure.
    pub backoff_min: Duration,
    /// Longest pause between connection attempts.
    pub backoff_max: Duration,
    /// Requests of at least this many bytes travel on the bulk lane, so that heartbeats never
    /// queue behind them.
    pub bulk_threshold: usize,
    /// Requests one connection may have in flight on the serving side; past it the server
    /// stops reading that connection until replies go out.
    pub max_in_flight: usize,
    /// Connections past their handshake one listener serves at once; more are closed at once.
    pub max_connections: usize,
    /// Connections still in their handshake one listener keeps; a new one past it closes the
    /// oldest (see `admission.rs`).
    pub max_unauthenticated: usize,
    /// The same, from one IP address.
    pub max_unauthenticated_per_source: usize,
    /// Bytes that frames over 64 KiB may hold on one listener while they are read; at least
    /// `max_frame`. A frame that cannot get its share within the frame timeout closes its
    /// connection.
    pub max_buffered: usize,
}

impl TcpSettings {
    /// Default settings for the cluster `cluster` with the shared `token`.
    pub fn new(cluster: &str, token: &str) -> Self {
        TcpSettings {
            cluster: cluster.to_string(),
            token: token.to_string(),
            tls: None,
            max_frame: 64 << 20,
            call_timeout: Duration::from_secs(2),
            bulk_call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            frame_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            bulk_threshold: 64 << 10,
            max_in_flight: 1024,
            max_connections: 1024,
            max_unauthenticated: 128,
            max_unauthenticated_per_source: 32,
            max_buffered: 256 << 20,
        }
    }

    /// The pause before the next connection attempt after `failures` failed ones in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        doubled.min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = TcpSettings::new("c", "t");
        assert_eq!(s.backoff(1), Duration::from_millis(20));
        assert_eq!(s.backoff(2), Duration::from_millis(40));
        assert_eq!(s.backoff(4), Duration::from_millis(160));
        assert_eq!(s.backoff(20), Duration::from_secs(1));
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(1));
    }
}
