//! One lane of a [`Link`](super::Link): the life of one TCP connection (down, dialling, up)
//! and the task that runs it. The link decides when to dial and what to send; the task dials,
//! shakes hands, then writes the link's requests and reads the replies, and reports back with
//! [`LaneEvent`]s to a recipient the link gives it, never touching the link's state.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::WeakRecipient;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::connection::{Connection, FrameReader};
use super::frame::{Frame, Lane, Outcome};
use super::handshake;
use super::settings::TcpSettings;
use super::task::TaskGuard;
use crate::messages::net::RpcError;
use crate::messages::tcp::LaneEvent;

/// Frames that may wait for the writer of one connection (while it dials, too); a call
/// finding the queue full fails at once rather than piling up behind a peer that does not
/// read.
pub(crate) const OUTBOX_CAPACITY: usize = 4096;

/// Where a lane's connection stands.
pub(crate) enum LaneState {
    /// No connection. Calls fail at once until `retry_at`; the first call after it dials.
    Down {
        /// When the next attempt may be made (`None`: now).
        retry_at: Option<Instant>,
        /// Failed attempts in a row, for the back-off.
        failures: u32,
    },
    /// Connecting and shaking hands; requests wait in the outbox.
    Dialing {
        /// Identifies this attempt and the connection it makes.
        generation: u64,
        /// Failed attempts before this one.
        failures: u32,
        /// To the task, which sends what it holds once connected.
        outbox: mpsc::Sender<Frame>,
        /// The task: dropping it abandons the attempt.
        task: TaskGuard,
    },
    /// Connected.
    Up {
        /// Identifies the connection.
        generation: u64,
        /// To the task's writer.
        outbox: mpsc::Sender<Frame>,
        /// When the last frame arrived on it (or it came up).
        last_heard: Instant,
        /// The task: dropping it closes the connection.
        _task: TaskGuard,
    },
}

impl LaneState {
    /// A lane that has never been connected.
    pub(crate) fn new() -> Self {
        LaneState::Down {
            retry_at: None,
            failures: 0,
        }
    }

    /// The generation of the current attempt or connection, if any.
    pub(crate) fn generation(&self) -> Option<u64> {
        match self {
            LaneState::Down { .. } => None,
            LaneState::Dialing { generation, .. } | LaneState::Up { generation, .. } => {
                Some(*generation)
            }
        }
    }

    /// A one-word description, for status reports.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            LaneState::Down { .. } => "down",
            LaneState::Dialing { .. } => "dialling",
            LaneState::Up { .. } => "up",
        }
    }
}

/// Starts the task of connection `generation`: it dials `target` for `lane`, reports
/// [`LaneEvent::Connected`] or [`LaneEvent::DialFailed`], then sends what arrives on the
/// returned outbox and reports each reply, until the connection breaks
/// ([`LaneEvent::Lost`]), all reported to `events`. Dropping the returned guard ends it and
/// closes the connection.
pub(crate) fn open(
    target: SocketAddr,
    lane: Lane,
    generation: u64,
    settings: Arc<TcpSettings>,
    events: WeakRecipient<LaneEvent>,
) -> (mpsc::Sender<Frame>, TaskGuard) {
    let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
    // Weak: the link owns this task, and a strong handle here would keep the link alive
    // after everyone else let go of it.
    let report = move |event: LaneEvent| {
        if let Some(events) = events.upgrade() {
            events.do_send(event);
        }
    };
    let task = TaskGuard::spawn(async move {
        let conn = match connect(target, lane, &settings).await {
            Ok(conn) => conn,
            Err(reason) => return report(LaneEvent::DialFailed { generation, reason }),
        };
        report(LaneEvent::Connected { generation });
        let Connection { reader, writer, .. } = conn;
        // Whichever half stops first ends the connection; the other is dropped with it.
        let reason = tokio::select! {
            sent = writer.drain(queue) => match sent {
                Ok(()) => "the link closed it".to_string(),
                Err(e) => format!("cannot send: {e}"),
            },
            reason = read_replies(reader, generation, &report) => reason,
        };
        report(LaneEvent::Lost { generation, reason });
    });
    (outbox, task)
}

async fn connect(
    target: SocketAddr,
    lane: Lane,
    settings: &TcpSettings,
) -> Result<Connection, String> {
    let stream = timeout(settings.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| format!("no connection within {:?}", settings.connect_timeout))?
        .map_err(|e| e.to_string())?;
    // TLS (when on) and our handshake, within one limit.
    let handshake = async {
        let mut conn = Connection::dialled(stream, settings).await?;
        handshake::greet(&mut conn, settings, lane)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        Ok::<_, String>(conn)
    };
    timeout(settings.handshake_timeout, handshake)
        .await
        .map_err(|_| {
            format!(
                "no handshake answer within {:?}",
                settings.handshake_timeout
            )
        })?
}

/// Reports every reply that arrives; returns why the connection can go on no more.
async fn read_replies<R: tokio::io::AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    generation: u64,
    report: &impl Fn(LaneEvent),
) -> String {
    loop {
        match reader.read_frame().await {
            Ok(Some(Frame::Reply { id, outcome })) => report(LaneEvent::Reply {
                generation,
                id,
                result: outcome_to_result(outcome),
            }),
            Ok(Some(other)) => return format!("server sent a {} frame", other.kind()),
            Ok(None) => return "closed by the server".to_string(),
            Err(e) => return e.to_string(),
        }
    }
}

/// Maps what the server said to what the caller of a client end expects.
fn outcome_to_result(outcome: Outcome) -> Result<Vec<u8>, RpcError> {
    match outcome {
        Outcome::Ok(reply) => Ok(reply),
        Outcome::UnknownMethod(method) => Err(RpcError::UnknownMethod(method)),
        Outcome::Failed(why) => Err(RpcError::Codec(why)),
        Outcome::Unavailable => Err(RpcError::Unreachable),
    }
}
