//! The KV clerk: a client of a replicated KV service.
//!
//! A `ClerkActor` opens a session before its first write (`KVServer.Register`; reads need
//! none), numbers its writes, remembers which server answered last (the leader) and retries
//! every request, on the next server after a failure or `WrongLeader`, until it succeeds; a
//! server silent for 150 ms is not waited for alone (the next one is asked meanwhile), so a
//! frozen leader costs an election, not a call timeout. The servers' session tables make each
//! write take effect exactly once. Sessions expire when
//! idle (or when newer ones crowd them out): a write refused as `SessionExpired` on its first
//! attempt was never executed, so the clerk opens a new session and sends it again; refused
//! on a retry, its outcome is unknown and the clerk answers [`ClerkError::SessionExpired`]. It
//! runs one operation at a time. [`Clerk`] is the async API on top: `clerk.put(k, v).await?`,
//! `clerk.get(k).await?` (`Some(value)`, or `None` for a missing key). Keys and values are
//! bytes.
//!
//! Handles: [`ClerkOp`], [`Stop`]. Sends: `KVServer.Register` / `KVServer.Get` /
//! `KVServer.PutAppend` through its client ends.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::actors::client_end::ClientEnd;
use crate::messages::kv::*;
use crate::messages::lifecycle::Stop;
use crate::messages::net::Rpc;
use crate::messages::rsm::{ClientId, Seq};

/// Pause after a full round of servers without success, so a clerk does not spin while the
/// cluster elects a leader.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// How long a clerk waits for one server alone before it tries the next one as well: well
/// above a loaded leader's p99 commit time (tens of milliseconds), well below an election
/// timeout.
const HEDGE_AFTER: Duration = Duration::from_millis(150);

/// The clerk actor.
pub(crate) struct ClerkActor {
    servers: Vec<ClientEnd>,
    /// The open session and the number of its last write.
    session: Option<(ClientId, Seq)>,
    leader: usize,
}

impl ClerkActor {
    /// A clerk reaching the servers through `servers`.
    pub(crate) fn new(servers: Vec<ClientEnd>) -> Self {
        ClerkActor {
            servers,
            session: None,
            leader: 0,
        }
    }
}

impl Actor for ClerkActor {
    type Context = Context<Self>;
}

/// Sends `args` to one server after another, starting at `*server`, until one answers with
/// something `accept` takes; leaves `*server` at the one that did, and returns the answer and
/// how many attempts were sent. A server that has not answered within [`HEDGE_AFTER`] is not
/// waited for alone: the next one is tried meanwhile, and whichever answers first counts (a
/// frozen or cut-off leader costs the wait for a new leader, not a call timeout per round). A
/// server is never sent a second attempt while one is pending there.
pub(crate) async fn until_accepted<A: Rpc, T>(
    servers: &[ClientEnd],
    server: &mut usize,
    args: &A,
    accept: impl Fn(A::Reply) -> Option<T>,
) -> (T, usize) {
    let n = servers.len();
    if n == 0 {
        // Nothing to ask: wait for the clerk to be stopped.
        return std::future::pending().await;
    }
    let mut pending = FuturesUnordered::new();
    let mut busy = vec![false; n];
    let (mut current, mut sent, mut tried) = (*server % n, 0, 0);
    loop {
        if !busy[current] {
            busy[current] = true;
            sent += 1;
            let end = &servers[current];
            pending.push(async move { (current, end.call(args).await) });
        }
        let hedge = tokio::time::sleep(HEDGE_AFTER);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                Some((answered, reply)) = pending.next() => {
                    busy[answered] = false;
                    if let Some(answer) = reply.ok().and_then(&accept) {
                        *server = answered;
                        return (answer, sent);
                    }
                    if answered == current {
                        break;
                    }
                }
                () = &mut hedge, if busy.contains(&false) => break,
            }
        }
        current = (current + 1) % n;
        tried += 1;
        if tried % n == 0 {
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
}

/// Where a clerk's operation ended.
struct Outcome {
    /// The server that answered last.
    leader: usize,
    /// The session after it.
    session: Option<(ClientId, Seq)>,
    result: Result<Option<Bytes>, ClerkError>,
}

/// Carries out `command`, starting at server `server`: a Get as it is, a write under
/// `session` (opening one first if there is none).
async fn run(
    servers: Vec<ClientEnd>,
    mut server: usize,
    mut session: Option<(ClientId, Seq)>,
    command: KvCommand,
) -> Outcome {
    let (op, key, value) = match command {
        KvCommand::Get { key } => {
            let read = |reply: KvReply| reply.result.ok();
            let (value, _) = until_accepted(&servers, &mut server, &GetArgs { key }, read).await;
            return Outcome {
                leader: server,
                session,
                result: Ok(value),
            };
        }
        KvCommand::Put { key, value } => (WriteOp::Put, key, value),
        KvCommand::Append { key, value } => (WriteOp::Append, key, value),
    };
    loop {
        let (client_id, seq) = match session {
            Some((client, last)) => (client, last + 1),
            None => {
                let opened = |reply: RegisterReply| reply.result.ok();
                let (client, _) =
                    until_accepted(&servers, &mut server, &RegisterArgs, opened).await;
                (client, 1)
            }
        };
        session = Some((client_id, seq));
        let args = PutAppendArgs {
            key: key.clone(),
            value: value.clone(),
            op,
            client_id,
            seq,
        };
        let written = |reply: KvReply| match reply.result {
            Ok(value) => Some(Ok(value)),
            Err(KvError::SessionExpired) => Some(Err(())),
            Err(KvError::WrongLeader) => None,
        };
        let (result, sent) = until_accepted(&servers, &mut server, &args, written).await;
        let result = match result {
            Ok(value) => Ok(value),
            // Refused, and no other attempt was sent: the write was never executed.
            Err(()) if sent == 1 => {
                session = None;
                continue;
            }
            Err(()) => {
                session = None;
                Err(ClerkError::SessionExpired)
            }
        };
        return Outcome {
            leader: server,
            session,
            result,
        };
    }
}

impl Handler<ClerkOp> for ClerkActor {
    // Atomic: the clerk handles one operation at a time, as 6.5840 assumes.
    type Result = AtomicResponse<Self, Result<Option<Bytes>, ClerkError>>;

    fn handle(&mut self, op: ClerkOp, _: &mut Self::Context) -> Self::Result {
        let attempt = run(self.servers.clone(), self.leader, self.session, op.0);
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |outcome, clerk, _| {
                clerk.leader = outcome.leader;
                clerk.session = outcome.session;
                outcome.result
            },
        )))
    }
}

impl Handler<Stop> for ClerkActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The async face of a clerk: any actor that carries out [`ClerkOp`]s (the KV clerk here, the
/// sharded KV clerk in `actors::shardkv::clerk`).
#[derive(Clone)]
pub struct Clerk {
    ops: Recipient<ClerkOp>,
}

impl Clerk {
    /// Starts a KV clerk actor (it opens its session with its first write).
    pub fn start(servers: Vec<ClientEnd>) -> Clerk {
        Clerk::of(ClerkActor::new(servers).start().recipient())
    }

    /// The async face of any clerk actor.
    pub fn of(ops: Recipient<ClerkOp>) -> Clerk {
        Clerk { ops }
    }

    /// Carries out `command`: the value for a Get (`None` if the key is missing), `None`
    /// for a Put or an Append; [`ClerkError::Stopped`] if the clerk actor is gone,
    /// [`ClerkError::SessionExpired`] if a write's outcome is unknown.
    pub async fn run(&self, command: KvCommand) -> Result<Option<Bytes>, ClerkError> {
        self.ops.send(ClerkOp(command)).await.unwrap_or_else(|e| {
            log::debug!("clerk is gone: {e}");
            Err(ClerkError::Stopped)
        })
    }

    /// The value of `key`, `None` if it has none.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClerkError> {
        self.run(KvCommand::Get { key: key.into() }).await
    }

    /// The value of `key` as text (invalid UTF-8 replaced by U+FFFD), `None` if it has none.
    pub async fn get_string(&self, key: impl Into<Bytes>) -> Result<Option<String>, ClerkError> {
        let value = self.get(key).await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClerkError> {
        let (key, value) = (key.into(), value.into());
        self.run(KvCommand::Put { key, value }).await.map(drop)
    }

    /// Appends `value` to `key`'s value (a missing key counts as empty).
    pub async fn append(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClerkError> {
        let (key, value) = (key.into(), value.into());
        self.run(KvCommand::Append { key, value }).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn a_stopped_clerk_answers_an_error_not_an_empty_value() {
        let actor = ClerkActor::new(Vec::new()).start();
        let clerk = Clerk::of(actor.clone().recipient());
        actor.send(Stop).await.expect("the clerk takes Stop");
        assert_eq!(clerk.get("k").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.get_string("k").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.put("k", "v").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.append("k", "v").await, Err(ClerkError::Stopped));
    }
}
