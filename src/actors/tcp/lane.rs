//! One lane of a [`Link`]: the life of one TCP connection (down, dialling, up) and the tasks
//! that move its frames. The link decides when to dial and what to send; the tasks here report
//! back to it with [`LaneEvent`]s and never touch its state.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use actix::WeakAddr;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::connection::Connection;
use super::frame::{Frame, Lane, Outcome};
use super::handshake;
use super::link::Link;
use super::settings::TcpSettings;
use super::task::TaskGuard;

/// Frames that may wait for the writer of one connection; a call finding the queue full fails
/// at once rather than piling up behind a peer that does not read.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Where a lane's connection stands.
pub enum LaneState {
    /// No connection. Calls fail at once until `retry_at`; the first call after it dials.
    Down {
        /// When the next attempt may be made (`None`: now).
        retry_at: Option<Instant>,
        /// Failed attempts in a row, for the back-off.
        failures: u32,
    },
    /// Connecting and shaking hands; calls wait in `queued`.
    Dialing {
        /// Identifies this attempt and the connection it makes.
        generation: u64,
        /// Failed attempts before this one.
        failures: u32,
        /// Requests to send once up.
        queued: Vec<Frame>,
        /// The dialling task.
        _task: TaskGuard,
    },
    /// Connected.
    Up {
        /// Identifies the connection.
        generation: u64,
        /// To the writer task.
        outbox: mpsc::Sender<Frame>,
        /// When the last frame arrived on it (or it came up).
        last_heard: Instant,
        /// Reader and writer tasks: dropping them closes the connection.
        _io: [TaskGuard; 2],
    },
}

impl LaneState {
    /// A lane that has never been connected.
    pub fn new() -> Self {
        LaneState::Down {
            retry_at: None,
            failures: 0,
        }
    }

    /// The generation of the current attempt or connection, if any.
    pub fn generation(&self) -> Option<u64> {
        match self {
            LaneState::Down { .. } => None,
            LaneState::Dialing { generation, .. } | LaneState::Up { generation, .. } => {
                Some(*generation)
            }
        }
    }

    /// A one-word description, for status reports.
    pub fn describe(&self) -> &'static str {
        match self {
            LaneState::Down { .. } => "down",
            LaneState::Dialing { .. } => "dialling",
            LaneState::Up { .. } => "up",
        }
    }
}

/// What a lane's tasks report to their link.
#[derive(Message)]
#[rtype(result = "()")]
pub enum LaneEvent {
    /// A dialling attempt ended.
    Dialed {
        /// The lane.
        lane: Lane,
        /// The attempt.
        generation: u64,
        /// The connection, or why there is none.
        result: Result<Connection, String>,
    },
    /// A reply arrived.
    Reply {
        /// The lane.
        lane: Lane,
        /// The connection it came on.
        generation: u64,
        /// The request it answers.
        id: u64,
        /// What became of the request.
        outcome: Outcome,
    },
    /// The connection broke.
    Lost {
        /// The lane.
        lane: Lane,
        /// The connection.
        generation: u64,
        /// Why, for the log.
        reason: String,
    },
}

/// Dials `target` for `lane` and reports the outcome to `link`.
pub fn dial(
    target: SocketAddr,
    lane: Lane,
    generation: u64,
    settings: Arc<TcpSettings>,
    link: WeakAddr<Link>,
) -> TaskGuard {
    TaskGuard::spawn(async move {
        let result = connect(target, lane, &settings).await;
        if let Some(link) = link.upgrade() {
            link.do_send(LaneEvent::Dialed {
                lane,
                generation,
                result,
            });
        }
    })
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
    let mut conn = Connection::new(stream, settings).map_err(|e| e.to_string())?;
    timeout(
        settings.handshake_timeout,
        handshake::greet(&mut conn, settings, lane),
    )
    .await
    .map_err(|_| {
        format!(
            "no handshake answer within {:?}",
            settings.handshake_timeout
        )
    })?
    .map_err(|e| format!("handshake failed: {e}"))?;
    Ok(conn)
}

/// Starts the reader and writer tasks of a connected lane. Returns the writer's queue and the
/// tasks (dropping them closes the connection).
pub fn run(
    conn: Connection,
    lane: Lane,
    generation: u64,
    link: WeakAddr<Link>,
) -> (mpsc::Sender<Frame>, [TaskGuard; 2]) {
    let Connection {
        mut reader, writer, ..
    } = conn;
    let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
    let report = move |link: &WeakAddr<Link>, event: LaneEvent| {
        if let Some(link) = link.upgrade() {
            link.do_send(event);
        }
    };
    let writer_link = link.clone();
    let writer = TaskGuard::spawn(async move {
        if let Err(e) = writer.drain(queue).await {
            let reason = format!("cannot send: {e}");
            report(
                &writer_link,
                LaneEvent::Lost {
                    lane,
                    generation,
                    reason,
                },
            );
        }
    });
    let reader = TaskGuard::spawn(async move {
        let reason = loop {
            match reader.read_frame().await {
                Ok(Some(Frame::Reply { id, outcome })) => report(
                    &link,
                    LaneEvent::Reply {
                        lane,
                        generation,
                        id,
                        outcome,
                    },
                ),
                Ok(Some(other)) => break format!("server sent a {} frame", other.kind()),
                Ok(None) => break "closed by the server".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        report(
            &link,
            LaneEvent::Lost {
                lane,
                generation,
                reason,
            },
        );
    });
    (outbox, [reader, writer])
}
