//! Structured trace events of a run, for people and for tools: every message the simulated
//! network sends, delivers or drops, every change of a Raft peer's role, term, commit and
//! applied index, the faults a test injects, and the client operations with the checker's
//! verdict.
//!
//! A [`Tracer`] is a cheap handle that is either off (the default: emitting costs one branch
//! and builds nothing) or records into one shared in-memory buffer. Each event is stamped with
//! the time since the recording began, read from tokio's clock: virtual time in a simulation,
//! wall time in a real run. [`write_jsonl`] writes the events as JSON Lines (the fields are
//! described in the README); [`timeline`] turns such a file into a self-contained HTML page.
//!
//! Events are kept in the order they were emitted. In a simulation everything runs on one
//! thread, so that order, like the events themselves, is a function of the seed.

pub mod timeline;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Which way a message is going and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetStep {
    /// The caller handed the request to the network.
    Send,
    /// The network handed the request to the called server.
    Deliver,
    /// The server answered; the reply is on its way back.
    Respond,
    /// The caller got the reply.
    Reply,
}

impl NetStep {
    fn name(self) -> &'static str {
        match self {
            NetStep::Send => "send",
            NetStep::Deliver => "deliver",
            NetStep::Respond => "respond",
            NetStep::Reply => "reply",
        }
    }
}

/// What happened, without when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A step of one RPC through the network. `from` and `to` name the servers the request
    /// goes between (`"client"` for a clerk's end), also for the reply steps.
    Net {
        /// Which step.
        step: NetStep,
        /// The network's id of the call.
        id: u64,
        /// The method, e.g. `Raft.AppendEntries`.
        kind: String,
        /// The calling side.
        from: String,
        /// The called server.
        to: String,
        /// A duplicated request (a copy the network made of call `id`'s original).
        dup: bool,
    },
    /// A request or reply that was lost, or a call that failed.
    Drop {
        /// The network's id of the call.
        id: u64,
        /// The method.
        kind: String,
        /// The calling side.
        from: String,
        /// The called server.
        to: String,
        /// Why: `lost-request`, `lost-reply`, `cut-reply`, `unreachable`, `dead`,
        /// `unknown-method`.
        why: &'static str,
    },
    /// A Raft peer's state after a change of any of its fields.
    Raft {
        /// The server the peer runs in.
        node: String,
        /// `follower`, `pre-candidate`, `candidate` or `leader`.
        role: String,
        /// Its current term.
        term: u64,
        /// The leader it knows of (a peer id).
        leader: Option<usize>,
        /// Its commit index.
        commit: u64,
        /// The last index handed to its applier.
        applied: u64,
        /// The last index of its log.
        last: u64,
    },
    /// A replica applied a command its service marks as worth noting (a new configuration of
    /// the shard controller, shards a group installed or deleted).
    Apply {
        /// The server.
        node: String,
        /// The log index of the command.
        index: u64,
        /// What it did, in a few words.
        what: String,
    },
    /// A replica took a snapshot of its state, or installed one from its leader.
    Snapshot {
        /// The server.
        node: String,
        /// The last log index the snapshot covers.
        index: u64,
        /// Installed from the leader (`true`) or taken by the replica itself.
        install: bool,
    },
    /// A server crashed (the test stopped it).
    Crash {
        /// The server.
        node: String,
    },
    /// A server (re)started from what it had saved.
    Restart {
        /// The server.
        node: String,
    },
    /// A link between two servers went down or came back up.
    Link {
        /// One end (for a one-way cut: the sender whose messages are lost).
        a: String,
        /// The other end.
        b: String,
        /// Whether it works now.
        up: bool,
        /// Only the direction `a → b` changed.
        one_way: bool,
    },
    /// A client called an operation.
    Invoke {
        /// The operation's id (unique within the run; the checker's call time).
        op: u64,
        /// The client.
        client: u64,
        /// `get`, `put` or `append`.
        kind: String,
        /// The key.
        key: String,
        /// The value written, if any.
        value: String,
    },
    /// An operation returned to its client.
    Return {
        /// The operation's id.
        op: u64,
        /// The client.
        client: u64,
        /// What it returned.
        value: String,
    },
    /// The linearizability checker's verdict on the run's history.
    Verdict {
        /// Whether the history is linearizable.
        ok: bool,
        /// The checker's explanation (empty when `ok`).
        text: String,
        /// Ids of the operations the explanation names.
        ops: Vec<u64>,
    },
}

/// One event: what happened, and when (nanoseconds since the recording began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Nanoseconds since the recording began.
    pub at: u64,
    /// What happened.
    pub kind: EventKind,
}

struct Sink {
    started: Instant,
    events: Mutex<Vec<Event>>,
    /// The next id [`Tracer::next_id`] hands out.
    next_id: AtomicU64,
}

/// A handle that records trace events, or does nothing when off. Clones share the buffer.
/// It may carry the name of the node it was handed to ([`Tracer::for_node`]).
#[derive(Clone, Default)]
pub struct Tracer {
    sink: Option<Arc<Sink>>,
    node: Arc<str>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("on", &self.is_on())
            .field("node", &self.node)
            .finish()
    }
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn off() -> Self {
        Tracer::default()
    }

    /// A tracer that records, with time counted from now.
    pub fn recording() -> Self {
        Tracer {
            sink: Some(Arc::new(Sink {
                started: Instant::now(),
                events: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
            })),
            node: Arc::from(""),
        }
    }

    /// The same recording, labelled with the name of the node it is handed to.
    pub fn for_node(&self, node: &str) -> Self {
        Tracer {
            sink: self.sink.clone(),
            node: Arc::from(node),
        }
    }

    /// The node's name given to [`Tracer::for_node`] (empty if none).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether it records.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Records the event `what` builds, stamped now; when off, `what` is not called.
    #[inline]
    pub fn emit(&self, what: impl FnOnce() -> EventKind) {
        if let Some(sink) = &self.sink {
            let at = u64::try_from(sink.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let kind = what();
            if let Ok(mut events) = sink.events.lock() {
                events.push(Event { at, kind });
            }
        }
    }

    /// An id no other caller of this recording gets (from 1), for a transport whose calls
    /// must be told apart across all its connections; `None` when off.
    pub fn next_id(&self) -> Option<u64> {
        self.sink
            .as_ref()
            .map(|sink| sink.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A copy of the events recorded so far (none when off).
    pub fn events(&self) -> Vec<Event> {
        self.sink
            .as_ref()
            .and_then(|sink| sink.events.lock().ok().map(|events| events.clone()))
            .unwrap_or_default()
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Tracer> = std::cell::RefCell::new(Tracer::off());
}

/// The tracer of the run on this thread, for code that has no handle of its own (a test's
/// history and checker). Off unless a harness set one with [`set_current`].
pub fn current() -> Tracer {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `tracer` this thread's [`current`] one; returns the one it replaces.
pub fn set_current(tracer: Tracer) -> Tracer {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), tracer))
}

/// `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `<` escaped too, so a line can sit inside an HTML script element as it is.
            c if (c as u32) < 0x20 || c == '<' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn field_str(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, ",\"{name}\":");
    json_str(out, value);
}

/// One event as one line of JSON (without the newline).
pub fn to_json(event: &Event) -> String {
    let mut out = String::with_capacity(96);
    let _ = write!(out, "{{\"t\":{}", event.at);
    match &event.kind {
        EventKind::Net {
            step,
            id,
            kind,
            from,
            to,
            dup,
        } => {
            field_str(&mut out, "ev", step.name());
            let _ = write!(out, ",\"id\":{id}");
            field_str(&mut out, "kind", kind);
            field_str(&mut out, "from", from);
            field_str(&mut out, "to", to);
            if *dup {
                out.push_str(",\"dup\":true");
            }
        }
        EventKind::Drop {
            id,
            kind,
            from,
            to,
            why,
        } => {
            field_str(&mut out, "ev", "drop");
            let _ = write!(out, ",\"id\":{id}");
            field_str(&mut out, "kind", kind);
            field_str(&mut out, "from", from);
            field_str(&mut out, "to", to);
            field_str(&mut out, "why", why);
        }
        EventKind::Raft {
            node,
            role,
            term,
            leader,
            commit,
            applied,
            last,
        } => {
            field_str(&mut out, "ev", "raft");
            field_str(&mut out, "node", node);
            field_str(&mut out, "role", role);
            let _ = write!(out, ",\"term\":{term}");
            match leader {
                Some(l) => {
                    let _ = write!(out, ",\"leader\":{l}");
                }
                None => out.push_str(",\"leader\":null"),
            }
            let _ = write!(
                out,
                ",\"commit\":{commit},\"applied\":{applied},\"last\":{last}"
            );
        }
        EventKind::Apply { node, index, what } => {
            field_str(&mut out, "ev", "apply");
            field_str(&mut out, "node", node);
            let _ = write!(out, ",\"index\":{index}");
            field_str(&mut out, "what", what);
        }
        EventKind::Snapshot {
            node,
            index,
            install,
        } => {
            field_str(&mut out, "ev", "snapshot");
            field_str(&mut out, "node", node);
            let _ = write!(out, ",\"index\":{index},\"install\":{install}");
        }
        EventKind::Crash { node } => {
            field_str(&mut out, "ev", "crash");
            field_str(&mut out, "node", node);
        }
        EventKind::Restart { node } => {
            field_str(&mut out, "ev", "restart");
            field_str(&mut out, "node", node);
        }
        EventKind::Link { a, b, up, one_way } => {
            field_str(&mut out, "ev", "link");
            field_str(&mut out, "a", a);
            field_str(&mut out, "b", b);
            let _ = write!(out, ",\"up\":{up},\"one_way\":{one_way}");
        }
        EventKind::Invoke {
            op,
            client,
            kind,
            key,
            value,
        } => {
            field_str(&mut out, "ev", "invoke");
            let _ = write!(out, ",\"op\":{op},\"client\":{client}");
            field_str(&mut out, "kind", kind);
            field_str(&mut out, "key", key);
            field_str(&mut out, "value", value);
        }
        EventKind::Return { op, client, value } => {
            field_str(&mut out, "ev", "return");
            let _ = write!(out, ",\"op\":{op},\"client\":{client}");
            field_str(&mut out, "value", value);
        }
        EventKind::Verdict { ok, text, ops } => {
            field_str(&mut out, "ev", "verdict");
            let _ = write!(out, ",\"ok\":{ok}");
            field_str(&mut out, "text", text);
            let ids: Vec<String> = ops.iter().map(u64::to_string).collect();
            let _ = write!(out, ",\"ops\":[{}]", ids.join(","));
        }
    }
    out.push('}');
    out
}

/// Writes `events` to `path` as JSON Lines, one event per line, in order.
pub fn write_jsonl(events: &[Event], path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    for event in events {
        out.write_all(to_json(event).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_records_nothing_and_builds_nothing() {
        let tracer = Tracer::off();
        tracer.emit(|| unreachable!("an off tracer must not build events"));
        assert!(tracer.events().is_empty());
    }

    #[test]
    fn apply_and_snapshot_events_as_json() {
        let apply = Event {
            at: 5,
            kind: EventKind::Apply {
                node: "ctrler1".into(),
                index: 12,
                what: "config 2: shards 1 1 1 1 1 2 2 2 2 2".into(),
            },
        };
        assert_eq!(
            to_json(&apply),
            r#"{"t":5,"ev":"apply","node":"ctrler1","index":12,"what":"config 2: shards 1 1 1 1 1 2 2 2 2 2"}"#
        );
        let snapshot = Event {
            at: 9,
            kind: EventKind::Snapshot {
                node: "node0".into(),
                index: 40,
                install: true,
            },
        };
        assert_eq!(
            to_json(&snapshot),
            r#"{"t":9,"ev":"snapshot","node":"node0","index":40,"install":true}"#
        );
    }

    #[test]
    fn json_lines_escape_strings() {
        let event = Event {
            at: 7,
            kind: EventKind::Invoke {
                op: 1,
                client: 2,
                kind: "put".into(),
                key: "k\"</script>".into(),
                value: "a\nb".into(),
            },
        };
        assert_eq!(
            to_json(&event),
            r#"{"t":7,"ev":"invoke","op":1,"client":2,"kind":"put","key":"k\"\u003c/script>","value":"a\nb"}"#
        );
    }
}
