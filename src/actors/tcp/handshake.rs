//! The handshake that opens every connection: the dialler says which protocol, cluster and
//! lane it speaks and shows the shared token; the server answers `Welcome` or `Refused` with a
//! reason and hangs up. Nothing else is read from a connection before it passes.

use std::fmt;

use super::connection::Connection;
use super::frame::{Frame, FrameError, Hello, Lane, PROTOCOL_VERSION};
use super::settings::TcpSettings;

/// Largest frame accepted before the handshake has passed: a hello is small, and a stranger
/// must not make the server buffer megabytes.
pub const HELLO_MAX_FRAME: usize = 4096;

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The server refused us, for this reason.
    RefusedByPeer(String),
    /// We refused the peer, for this reason (it has been told).
    Refused(String),
    /// The connection closed before the handshake was over.
    Closed,
    /// The connection broke or carried bytes that are not a frame.
    Frame(FrameError),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::RefusedByPeer(why) => write!(f, "refused by the server: {why}"),
            HandshakeError::Refused(why) => write!(f, "{why}"),
            HandshakeError::Closed => write!(f, "connection closed during the handshake"),
            HandshakeError::Frame(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Frame(e)
    }
}

/// The dialling side: presents our credentials for `lane` and waits for the verdict.
pub(crate) async fn greet(
    conn: &mut Connection,
    settings: &TcpSettings,
    lane: Lane,
) -> Result<(), HandshakeError> {
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        cluster: settings.cluster.clone(),
        token: settings.token.clone(),
        lane,
    };
    conn.send(&Frame::Hello(hello)).await?;
    let answer = conn.reader.read_frame().await.map_err(|e| match e {
        FrameError::TooLarge { len, .. } if looks_like_tls(len) => HandshakeError::RefusedByPeer(
            "the server speaks TLS and this side does not: add the cluster file's [tls] section"
                .into(),
        ),
        other => HandshakeError::Frame(other),
    })?;
    match answer {
        Some(Frame::Welcome) => Ok(()),
        Some(Frame::Refused { reason }) => Err(HandshakeError::RefusedByPeer(reason)),
        Some(other) => Err(HandshakeError::Frame(FrameError::Malformed(format!(
            "expected welcome, got a {} frame",
            other.kind()
        )))),
        None => Err(HandshakeError::Closed),
    }
}

/// Whether a frame length read off the wire is really the start of a TLS record (an alert or
/// a handshake record: type 0x15 or 0x16, then major version 3), as a TLS server answers a
/// plain hello.
fn looks_like_tls(len: u64) -> bool {
    let [_, _, _, _, kind, major, ..] = len.to_be_bytes();
    matches!(kind, 0x15 | 0x16) && major == 3
}

/// The serving side: checks the dialler's hello and answers it. On success returns the lane
/// the connection will carry; on failure the dialler has been sent the reason (if the
/// connection still works) and the caller should close it.
pub(crate) async fn answer(
    conn: &mut Connection,
    settings: &TcpSettings,
) -> Result<Lane, HandshakeError> {
    conn.reader
        .set_max_frame(HELLO_MAX_FRAME.min(settings.max_frame));
    let first = conn.reader.read_frame().await;
    conn.reader.set_max_frame(settings.max_frame);
    let verdict = match first {
        Ok(Some(Frame::Hello(hello))) => check(&hello, settings).map(|()| hello.lane),
        Ok(Some(other)) => Err(format!("expected a hello, got a {} frame", other.kind())),
        Ok(None) => return Err(HandshakeError::Closed),
        Err(e) => Err(e.to_string()),
    };
    match verdict {
        Ok(lane) => {
            conn.send(&Frame::Welcome).await?;
            Ok(lane)
        }
        Err(reason) => {
            // Best effort: the peer may be gone or not speak our protocol at all.
            let _ = conn
                .send(&Frame::Refused {
                    reason: reason.clone(),
                })
                .await;
            Err(HandshakeError::Refused(reason))
        }
    }
}

fn check(hello: &Hello, settings: &TcpSettings) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not ours ({PROTOCOL_VERSION})",
            hello.protocol
        ));
    }
    if hello.cluster != settings.cluster {
        return Err(format!(
            "cluster name {:?} does not match ours ({:?})",
            hello.cluster, settings.cluster
        ));
    }
    if !same_secret(hello.token.as_bytes(), settings.token.as_bytes()) {
        return Err("wrong cluster token".to_string());
    }
    Ok(())
}

/// Compares two secrets in time that depends only on their lengths, so a dialler cannot learn
/// the token a byte at a time from how fast it is refused.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, token: &str, protocol: u32) -> Hello {
        Hello {
            protocol,
            cluster: cluster.into(),
            token: token.into(),
            lane: Lane::Control,
        }
    }

    #[test]
    fn only_the_right_cluster_token_and_protocol_pass() {
        let settings = TcpSettings::new("prod", "secret");
        assert!(check(&hello("prod", "secret", PROTOCOL_VERSION), &settings).is_ok());
        let wrong_token = check(&hello("prod", "secreT", PROTOCOL_VERSION), &settings);
        assert_eq!(wrong_token, Err("wrong cluster token".to_string()));
        let wrong_cluster = check(&hello("test", "secret", PROTOCOL_VERSION), &settings);
        assert!(wrong_cluster.is_err_and(|e| e.contains("cluster name")));
        let wrong_protocol = check(&hello("prod", "secret", 99), &settings);
        assert!(wrong_protocol.is_err_and(|e| e.contains("protocol")));
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(same_secret(b"", b""));
    }
}
