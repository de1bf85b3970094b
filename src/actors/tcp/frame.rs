//! The wire format of the TCP transport: what a frame carries and how it is laid out.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of rmp-serde encoded
//! [`Frame`]. A connection opens with [`Frame::Hello`] from the dialling side, answered by
//! [`Frame::Welcome`] or [`Frame::Refused`]; after that the dialler sends
//! [`Frame::Request`]s and the server answers each with a [`Frame::Reply`] carrying the same
//! id, in whatever order the replies are ready. This module knows nothing of sockets: it turns
//! frames into bytes and bytes into frames (`connection.rs` moves them).
//!
//! Why not tokio-util's `LengthDelimitedCodec` (checked against 0.7.20): as soon as it has read
//! a length prefix it reserves the whole announced frame, so four bytes from a peer buy up to
//! `max_frame` (64 MiB) of buffer per connection, held while a stalled frame waits out its
//! timeout; [`Frame::parse`] grows the buffer at most 256 KiB ahead of the bytes that have
//! arrived. `Framed` also hides its read loop, and the frame timeout (a started frame must
//! finish in time, an idle connection may wait forever) needs to see between reads whether
//! part of a frame is buffered, so our read loop would stay; and its encoder copies every body
//! into its write buffer, where we serialize straight behind the prefix. The codec would
//! replace about 25 lines of prefix handling and cost a dependency, an allocation a peer can
//! force, and a copy of every snapshot.

use std::fmt;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::shard::PullShardsArgs;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Version of this protocol; a peer speaking another one is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// Generous bound on what a request frame adds to its method name and arguments.
pub(crate) const REQUEST_OVERHEAD: usize = 64;
/// Most a partly read frame makes the buffer grow by in one step.
const RESERVE_STEP: usize = 256 << 10;

/// Which of a link's two connections a frame travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lane {
    /// Small, latency-sensitive calls: heartbeats, votes, client requests.
    Control,
    /// Large requests (snapshots, long entry batches) and calls with large replies (shard
    /// pulls), kept off the control connection so they never hold heartbeats up, and given
    /// the bulk lane's longer call timeout.
    Bulk,
}

/// Methods whose replies can be large whatever the request's size: a reply travels on the
/// connection its request came on, so these take the bulk lane.
const LARGE_REPLIES: &[&str] = &[PullShardsArgs::METHOD];

impl Lane {
    /// The lane a call of `method` with `len` encoded bytes of arguments takes, given the
    /// bulk threshold.
    pub fn for_request(method: &str, len: usize, bulk_threshold: usize) -> Lane {
        if len >= bulk_threshold || LARGE_REPLIES.contains(&method) {
            Lane::Bulk
        } else {
            Lane::Control
        }
    }
}

/// The first frame of every connection, sent by the side that dialled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the dialler.
    pub protocol: u32,
    /// The cluster the dialler belongs to.
    pub cluster: String,
    /// The dialler's copy of the shared token.
    pub token: String,
    /// What the connection will carry.
    pub lane: Lane,
}

/// How a request ended on the serving side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The encoded reply.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// No registered service has this method.
    UnknownMethod(String),
    /// The service could not handle the request (it did not decode, or the reply was too
    /// large to send).
    Failed(String),
    /// The service is gone (the node is shutting down).
    Unavailable,
}

/// Everything that travels on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Opens a connection.
    Hello(Hello),
    /// The handshake succeeded.
    Welcome,
    /// The handshake failed; the server closes the connection after this frame.
    Refused {
        /// Why, for the dialler's log.
        reason: String,
    },
    /// A call: `method` is `"Service.Method"`, `args` the rmp-serde encoded request.
    Request {
        /// Matches the reply to the call; unique among the connection's calls in flight.
        id: u64,
        /// Full method name.
        method: String,
        /// Encoded request.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// The answer to the request with the same id.
    Reply {
        /// The request's id.
        id: u64,
        /// What became of it.
        outcome: Outcome,
    },
}

impl Frame {
    /// A short name of the frame's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome => "welcome",
            Frame::Refused { .. } => "refused",
            Frame::Request { .. } => "request",
            Frame::Reply { .. } => "reply",
        }
    }

    /// The frame as it goes on the wire: length prefix, then body. Fails if the body would be
    /// larger than `max_frame`.
    pub fn encode(&self, max_frame: usize) -> Result<Vec<u8>, FrameError> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.encoded_len_hint());
        bytes.resize(HEADER_LEN, 0);
        rmp_serde::encode::write(&mut bytes, self)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        let len = bytes.len() - HEADER_LEN;
        if len > max_frame {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: max_frame,
            });
        }
        let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
            len: len as u64,
            max: max_frame,
        })?;
        bytes[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
        Ok(bytes)
    }

    /// About how long the encoded body is (its payload plus room for the rest), so that
    /// encoding allocates once instead of growing the buffer step by step.
    fn encoded_len_hint(&self) -> usize {
        const FIELDS: usize = 32;
        FIELDS
            + match self {
                Frame::Request { method, args, .. } => method.len() + args.len(),
                Frame::Reply {
                    outcome: Outcome::Ok(reply),
                    ..
                } => reply.len(),
                Frame::Reply {
                    outcome: Outcome::UnknownMethod(text) | Outcome::Failed(text),
                    ..
                }
                | Frame::Refused { reason: text } => text.len(),
                Frame::Hello(_) | Frame::Welcome | Frame::Reply { .. } => 0,
            }
    }

    /// Takes one whole frame off the front of `buf`, if one is there. `Ok(None)` means more
    /// bytes are needed. A length over `max_frame` is an error as soon as the prefix is read,
    /// before anything is allocated for the body.
    pub fn parse(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
        let Some(len) = Self::announced_len(buf) else {
            return Ok(None);
        };
        if len > max_frame as u64 {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame,
            });
        }
        let len = len as usize;
        if buf.len() < HEADER_LEN + len {
            // Room for the next stretch of the body only: memory grows as bytes arrive, not
            // as a peer announces them.
            buf.reserve((HEADER_LEN + len - buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(len);
        rmp_serde::from_slice(&body)
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }

    /// The body length announced by the prefix at the front of `buf`, once it is all there.
    pub(crate) fn announced_len(buf: &[u8]) -> Option<u64> {
        let prefix: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(u64::from(u32::from_be_bytes(prefix)))
    }
}

/// Why a connection could not go on.
#[derive(Debug)]
pub enum FrameError {
    /// A frame announced (or would need) more than the maximum frame size.
    TooLarge {
        /// Its length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// Bytes that do not decode as a frame.
    Malformed(String),
    /// The peer closed the connection in the middle of a frame.
    ClosedMidFrame,
    /// The rest of a started frame did not arrive in time (a stalled or half-open peer).
    Stalled,
    /// A large frame got no share of the port's buffer budget within the frame timeout.
    OverBudget {
        /// Its length.
        len: u64,
    },
    /// The socket failed.
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::Malformed(e) => write!(f, "malformed frame: {e}"),
            FrameError::ClosedMidFrame => write!(f, "connection closed in the middle of a frame"),
            FrameError::Stalled => write!(f, "the rest of a frame did not arrive in time"),
            FrameError::OverBudget { len } => write!(
                f,
                "no buffer for a frame of {len} bytes within the frame timeout (other large \
                 frames hold this port's budget)"
            ),
            FrameError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn request(len: usize) -> Frame {
        Frame::Request {
            id: 7,
            method: "Raft.AppendEntries".into(),
            args: vec![0xab; len],
        }
    }

    #[test]
    fn frames_round_trip_even_when_split_across_reads() {
        let frames = vec![
            Frame::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                cluster: "c".into(),
                token: "t".into(),
                lane: Lane::Bulk,
            }),
            Frame::Welcome,
            request(1000),
            Frame::Reply {
                id: 7,
                outcome: Outcome::Ok(vec![1, 2, 3]),
            },
        ];
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.encode(MAX).expect("encode"))
            .collect();
        let mut buf = BytesMut::new();
        let mut parsed = Vec::new();
        // Feed three bytes at a time: every split point must be handled.
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = Frame::parse(&mut buf, MAX).expect("parse") {
                parsed.push(frame);
            }
        }
        assert_eq!(parsed, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        match Frame::parse(&mut buf, MAX) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, MAX);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn encoding_refuses_frames_over_the_maximum() {
        assert!(matches!(
            request(MAX).encode(MAX),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(request(MAX - REQUEST_OVERHEAD).encode(MAX).is_ok());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&5u32.to_be_bytes());
        buf.extend_from_slice(&[0xc1, 0xff, 0x00, 0x13, 0x37]);
        assert!(matches!(
            Frame::parse(&mut buf, MAX),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn large_requests_and_replies_take_the_bulk_lane() {
        assert_eq!(
            Lane::for_request("Raft.AppendEntries", 100, 65536),
            Lane::Control
        );
        assert_eq!(
            Lane::for_request("Raft.AppendEntries", 65536, 65536),
            Lane::Bulk
        );
        // A shard pull asks little and gets a whole shard back.
        assert_eq!(
            Lane::for_request("ShardKV.PullShards", 40, 65536),
            Lane::Bulk
        );
    }
}
