//! The search: for each partition of a history, look for a total order of its operations that
//! respects real time and that the model accepts (the Wing & Gong depth-first search with
//! Lowe's memoisation). Partitions run in parallel under one global deadline.
//!
//! How one partition is searched: every operation becomes a call entry and a return entry,
//! sorted by time (calls before returns on ties, so operations that touch in time count as
//! concurrent). The entries form a doubly linked list. Walking from the head, any call met
//! before the first return is an operation that may take effect next; the search lifts it
//! (with its return) out of the list if the model accepts it and the pair (set of lifted
//! operations, state) is new. Meeting a return means the operation it ends was never lifted:
//! the search undoes the last lift and tries the next candidate. An empty list is a
//! linearization; undoing with nothing left to undo proves there is none.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::explain::{LinearizedOp, OpSummary, StuckOp, Violation, WhyStuck};
use super::model::{Model, Operation, Partition};

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every partition has a linearization.
    Ok,
    /// Some partition has none; the first such partition (in the model's partition order)
    /// is described.
    Illegal(Violation),
    /// The deadline passed before a partition got a verdict. Our tests treat this as a
    /// failure.
    Unknown {
        /// The label of the first partition left without a verdict (the key, for KV).
        partition: String,
        /// How far the search got.
        reason: String,
    },
}

impl CheckResult {
    /// Whether the history was proven linearizable.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// The violation, if the history was proven not linearizable.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckResult::Illegal(v) => Some(v),
            _ => None,
        }
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "history is linearizable"),
            CheckResult::Illegal(v) => write!(f, "{v}"),
            CheckResult::Unknown { partition, reason } => write!(
                f,
                "linearizability unknown: the history of partition '{partition}' was too \
                 hard to check: {reason}"
            ),
        }
    }
}

/// Checks `history` against model `M`, giving up after `timeout` (wall time) in all.
///
/// Partitions (see [`Model::partition_indices`]) are searched independently, several at a
/// time. If several are illegal, the first in partition order is reported, whatever the
/// thread timing.
pub fn check_operations<M>(
    history: &[Operation<M::Input, M::Output>],
    timeout: Duration,
) -> CheckResult
where
    M: Model,
    M::Input: Sync,
    M::Output: Sync,
{
    let start = Instant::now();
    let deadline = start.checked_add(timeout);
    let partitions: Vec<Partition> = M::partition_indices(history)
        .into_iter()
        .filter(|p| !p.ops.is_empty())
        .collect();
    let control = Control {
        deadline,
        // Partitions after the first illegal one found need not finish.
        stop_after: AtomicUsize::new(usize::MAX),
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(partitions.len())
        .max(1);

    let mut outcomes: Vec<Option<Outcome>> = vec![None; partitions.len()];
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(part) = partitions.get(i) else { break };
            let outcome = if i > control.stop_after.load(Ordering::Relaxed) {
                Outcome::Skipped
            } else {
                check_partition::<M>(history, part, i, &control, start)
            };
            if matches!(outcome, Outcome::Illegal(_)) {
                control.stop_after.fetch_min(i, Ordering::Relaxed);
            }
            done.push((i, outcome));
        }
        done
    };
    if workers == 1 {
        for (i, o) in work() {
            outcomes[i] = Some(o);
        }
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
            for h in handles {
                match h.join() {
                    Ok(done) => {
                        for (i, o) in done {
                            outcomes[i] = Some(o);
                        }
                    }
                    // A model that panics is a bug in the test; let it surface as such.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }

    let mut unknown = None;
    for (part, outcome) in partitions.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Illegal(v)) => return CheckResult::Illegal(v),
            Some(Outcome::TimedOut(reason)) | Some(Outcome::Unfinished(reason)) => {
                if unknown.is_none() {
                    unknown = Some(CheckResult::Unknown {
                        partition: part.label.clone(),
                        reason,
                    });
                }
            }
            Some(Outcome::Ok) | Some(Outcome::Skipped) | None => {}
        }
    }
    unknown.unwrap_or(CheckResult::Ok)
}

/// Shared between the threads searching partitions.
struct Control {
    deadline: Option<Instant>,
    stop_after: AtomicUsize,
}

#[derive(Clone)]
enum Outcome {
    Ok,
    Illegal(Violation),
    /// The deadline passed during this partition's search.
    TimedOut(String),
    /// The deadline had passed before this partition's search began.
    Unfinished(String),
    /// Not needed: an earlier partition is illegal.
    Skipped,
}

const NIL: u32 = u32::MAX;

/// The time-ordered call/return entries of one partition as a doubly linked list that
/// entries can be lifted out of and put back in LIFO order.
struct EntryList {
    /// For entry `e`: the local operation id (operations are numbered in call order).
    op: Vec<u32>,
    /// For a call entry, its return entry; `NIL` for a return entry.
    ret: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The sentinel's index (one past the last entry).
    head: u32,
}

impl EntryList {
    /// Builds the list from `(call, return)` times given in history order. Returns it with
    /// the history-order position of each local operation id.
    fn new(times: &[(u64, u64)]) -> (EntryList, Vec<usize>) {
        // (time, 0 = call / 1 = return, history-order position): sorting puts calls before
        // returns at equal times and keeps history order among equals.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(times.len() * 2);
        for (pos, &(call, ret)) in times.iter().enumerate() {
            events.push((call, 0, pos));
            events.push((ret.max(call), 1, pos));
        }
        events.sort_unstable();
        let len = events.len();
        let head = len as u32;
        let mut local_of_pos = vec![NIL; times.len()];
        let mut pos_of_local = Vec::with_capacity(times.len());
        let mut call_entry = vec![NIL; times.len()];
        let mut list = EntryList {
            op: vec![NIL; len],
            ret: vec![NIL; len],
            next: vec![NIL; len + 1],
            prev: vec![NIL; len + 1],
            head,
        };
        for (e, &(_, kind, pos)) in events.iter().enumerate() {
            if kind == 0 {
                local_of_pos[pos] = pos_of_local.len() as u32;
                pos_of_local.push(pos);
                call_entry[pos] = e as u32;
            } else {
                list.ret[call_entry[pos] as usize] = e as u32;
            }
            list.op[e] = local_of_pos[pos];
        }
        // Sentinel at `head`, then entries 0..len in order.
        let mut prev = head;
        for e in 0..len as u32 {
            list.next[prev as usize] = e;
            list.prev[e as usize] = prev;
            prev = e;
        }
        list.next[prev as usize] = NIL;
        (list, pos_of_local)
    }

    fn first(&self) -> u32 {
        self.next[self.head as usize]
    }

    fn is_call(&self, e: u32) -> bool {
        self.ret[e as usize] != NIL
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        if n != NIL {
            self.prev[n as usize] = e;
        }
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.ret[call as usize]);
    }

    /// Undoes the matching `lift`; lifts must be undone last first.
    fn unlift(&mut self, call: u32) {
        self.relink(self.ret[call as usize]);
        self.relink(call);
    }
}

/// The set of linearized operations, with an incrementally kept Zobrist hash and the
/// window of words that are neither all ones nor all zeros (operations are numbered in call
/// order, so the set is mostly "everything before some point": the window stays small).
struct OpSet {
    words: Vec<u64>,
    /// `words[..lo]` are all ones.
    lo: usize,
    /// `words[hi..]` are all zeros.
    hi: usize,
    zobrist: u64,
}

fn mix64(mut x: u64) -> u64 {
    // splitmix64's finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl OpSet {
    fn new(n: usize) -> OpSet {
        OpSet {
            words: vec![0; n.div_ceil(64)],
            lo: 0,
            hi: 0,
            zobrist: 0,
        }
    }

    fn insert(&mut self, op: u32) {
        let w = op as usize / 64;
        self.words[w] |= 1 << (op % 64);
        self.zobrist ^= mix64(u64::from(op));
        self.hi = self.hi.max(w + 1);
        while self.lo < self.hi && self.words[self.lo] == u64::MAX {
            self.lo += 1;
        }
    }

    fn remove(&mut self, op: u32) {
        let w = op as usize / 64;
        self.words[w] &= !(1 << (op % 64));
        self.zobrist ^= mix64(u64::from(op));
        self.lo = self.lo.min(w);
        while self.hi > self.lo && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    fn window(&self) -> &[u64] {
        &self.words[self.lo..self.hi]
    }
}

/// A cheap hasher for model states (multiply-rotate over 8-byte chunks); states that hash
/// themselves in O(1), like `KvState`, then cost O(1) to look up.
#[derive(Default)]
struct StateHasher(u64);

impl Hasher for StateHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// Passes an already well-mixed 64-bit fingerprint through as the hash.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One memoised (set, state) pair; entries with the same fingerprint are chained.
struct MemoEntry<S> {
    lo: u32,
    window: Box<[u64]>,
    state: S,
    next: u32,
}

/// The set of (linearized set, state) pairs already explored. Looked up by a 64-bit
/// fingerprint, confirmed by comparing the sets and states exactly, so collisions cost
/// time, never correctness.
struct Memo<S> {
    heads: HashMap<u64, u32, BuildHasherDefault<Fingerprint>>,
    entries: Vec<MemoEntry<S>>,
}

impl<S: Clone + Eq + Hash> Memo<S> {
    fn new() -> Self {
        Memo {
            heads: HashMap::default(),
            entries: Vec::new(),
        }
    }

    /// Records (set, state); returns false if it was already there.
    fn insert(&mut self, set: &OpSet, state: &S) -> bool {
        let mut hasher = StateHasher::default();
        state.hash(&mut hasher);
        let fingerprint = set.zobrist ^ hasher.finish();
        let fresh = self.entries.len() as u32;
        let mut at = *self.heads.entry(fingerprint).or_insert(fresh);
        while at != fresh {
            let e = &self.entries[at as usize];
            if e.lo as usize == set.lo && *e.window == *set.window() && e.state == *state {
                return false;
            }
            if e.next == NIL {
                self.entries[at as usize].next = fresh;
                break;
            }
            at = e.next;
        }
        self.entries.push(MemoEntry {
            lo: set.lo as u32,
            window: set.window().into(),
            state: state.clone(),
            next: NIL,
        });
        true
    }
}

/// The longest stack of lifted calls seen so far. Copying the stack at every new maximum
/// would be quadratic; instead only the part that changed since the last copy is copied.
struct Deepest {
    calls: Vec<u32>,
    /// `calls[..common]` equals the current stack's bottom.
    common: usize,
}

impl Deepest {
    fn pushed<S>(&mut self, stack: &[Frame<S>]) {
        if stack.len() > self.calls.len() {
            self.calls.truncate(self.common);
            self.calls
                .extend(stack[self.common..].iter().map(|f| f.call));
            self.common = stack.len();
        }
    }

    fn popped(&mut self, depth: usize) {
        self.common = self.common.min(depth);
    }
}

/// How many steps the second, unpruned search may take to find a clearer explanation.
const EXPLAIN_STEP_BUDGET: u64 = 500_000;

/// Checks one partition: a pruned search for the verdict, then, if it is illegal, an unpruned
/// one (within a budget) for the report.
///
/// Look-ahead pruning abandons a branch as soon as some later read becomes impossible, so
/// its deepest prefix often stops short of the real culprit (an injected stale read at the
/// end shows up as "a later read is stranded" on some unrelated branch). The unpruned
/// search reaches the longest linearizable prefix in the classic sense, after which every
/// candidate is simply illegal, which reads much better.
fn check_partition<M: Model>(
    history: &[Operation<M::Input, M::Output>],
    part: &Partition,
    index: usize,
    control: &Control,
    start: Instant,
) -> Outcome {
    let verdict = search::<M>(history, part, index, control, start, true, u64::MAX);
    if !matches!(verdict, Outcome::Illegal(_)) {
        return verdict;
    }
    match search::<M>(
        history,
        part,
        index,
        control,
        start,
        false,
        EXPLAIN_STEP_BUDGET,
    ) {
        clearer @ Outcome::Illegal(_) => clearer,
        _ => verdict,
    }
}

/// Searches one partition, with or without look-ahead pruning, for at most `max_steps`.
fn search<M: Model>(
    history: &[Operation<M::Input, M::Output>],
    part: &Partition,
    index: usize,
    control: &Control,
    start: Instant,
    allow_look_ahead: bool,
    max_steps: u64,
) -> Outcome {
    if control.deadline.is_some_and(|d| Instant::now() >= d) {
        return Outcome::Unfinished(format!(
            "not started: the deadline passed after {:?}",
            start.elapsed()
        ));
    }
    let times: Vec<(u64, u64)> = part
        .ops
        .iter()
        .map(|&i| (history[i].call, history[i].return_time))
        .collect();
    let (mut list, pos_of_local) = EntryList::new(&times);
    let n = pos_of_local.len();
    // Local op id -> the operation in the history.
    let op_of = |local: u32| &history[part.ops[pos_of_local[local as usize]]];

    // Read-only operations (Gets) never need branching: one that is legal now can be moved
    // to the front of any linearization of the rest, so taking it at once is never wrong,
    // and if that fails, nothing else from this point can succeed either.
    let read_only: Vec<bool> = (0..n as u32)
        .map(|local| {
            let op = op_of(local);
            M::is_read_only(&op.input, &op.output)
        })
        .collect();
    let extension: Vec<bool> = (0..n as u32)
        .map(|local| M::is_extension(&op_of(local).input))
        .collect();
    // For each overwrite, the state it sets (the same from any state).
    let overwrite: Vec<Option<M::State>> = (0..n as u32)
        .map(|local| {
            let op = op_of(local);
            if M::is_overwrite(&op.input) {
                M::step(&M::init(), &op.input, &op.output)
            } else {
                None
            }
        })
        .collect();
    let look_ahead =
        allow_look_ahead && (extension.iter().any(|&e| e) || overwrite.iter().any(Option::is_some));
    let kinds = OpKinds {
        read_only: &read_only,
        extension: &extension,
        overwrite: &overwrite,
    };

    let mut state = M::init();
    let mut set = OpSet::new(n);
    let mut memo = Memo::new();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut deepest = Deepest {
        calls: Vec::new(),
        common: 0,
    };
    let mut steps: u64 = 0;
    let mut entry = list.first();
    // Whether `entry` is the first entry of a node not yet scanned for read-only moves.
    let mut fresh = true;
    // Whether the state just changed and look-ahead pruning should run.
    let mut check_ahead = false;
    loop {
        if entry == NIL {
            // Only an empty list ends a walk: every call's return comes after it.
            return Outcome::Ok;
        }
        steps += 1;
        if steps.is_multiple_of(1024) {
            let late = control.deadline.is_some_and(|d| Instant::now() >= d);
            if late || steps >= max_steps {
                return Outcome::TimedOut(format!(
                    "no verdict after {:?}: {} of {} operations in the deepest linearizable \
                     prefix, {} search steps, {} (set, state) pairs memoised",
                    start.elapsed(),
                    deepest.calls.len(),
                    n,
                    steps,
                    memo.entries.len()
                ));
            }
            if index > control.stop_after.load(Ordering::Relaxed) {
                return Outcome::Skipped;
            }
        }

        let mut dead_end = false;
        if check_ahead {
            check_ahead = false;
            dead_end = unreachable_read::<M>(&list, &state, &kinds, op_of).is_some();
            if !dead_end {
                // Only nodes that pass the look-ahead count as reached, so that every
                // candidate after the deepest prefix fails for a reason the report can name.
                deepest.pushed(&stack);
            }
        }
        if fresh && !dead_end {
            fresh = false;
            let mut e = entry;
            while e != NIL && list.is_call(e) {
                let local = list.op[e as usize];
                let op = op_of(local);
                if read_only[local as usize] && M::step(&state, &op.input, &op.output).is_some() {
                    break;
                }
                e = list.next[e as usize];
            }
            if e != NIL && list.is_call(e) {
                let local = list.op[e as usize];
                set.insert(local);
                if memo.insert(&set, &state) {
                    stack.push(Frame {
                        call: e,
                        before: state.clone(),
                        forced: true,
                    });
                    deepest.pushed(&stack);
                    list.lift(e);
                    entry = list.first();
                    fresh = true;
                    continue;
                }
                // Explored before, and it failed: so does this node.
                set.remove(local);
                dead_end = true;
            }
        }

        if !dead_end && list.is_call(entry) {
            let local = list.op[entry as usize];
            // Read-only candidates were tried by the scan above; none is legal here.
            if !read_only[local as usize] {
                let op = op_of(local);
                if let Some(after) = M::step(&state, &op.input, &op.output) {
                    set.insert(local);
                    if memo.insert(&set, &after) {
                        let before = std::mem::replace(&mut state, after);
                        stack.push(Frame {
                            call: entry,
                            before,
                            forced: false,
                        });
                        if !look_ahead {
                            deepest.pushed(&stack);
                        }
                        list.lift(entry);
                        entry = list.first();
                        fresh = true;
                        check_ahead = look_ahead;
                        continue;
                    }
                    set.remove(local);
                }
            }
            entry = list.next[entry as usize];
            continue;
        }

        // A dead end, or a return: the operation ending there was never linearized. Undo
        // the last choice (and any forced moves before it) and try the next candidate.
        loop {
            let Some(frame) = stack.pop() else {
                return Outcome::Illegal(explain::<M>(
                    history,
                    part,
                    &mut list,
                    &pos_of_local,
                    &deepest.calls,
                    look_ahead.then_some(&kinds),
                ));
            };
            deepest.popped(stack.len());
            state = frame.before;
            set.remove(list.op[frame.call as usize]);
            list.unlift(frame.call);
            if !frame.forced {
                entry = list.next[frame.call as usize];
                break;
            }
        }
    }
}

/// What the look-ahead needs to know about each operation (by local id).
struct OpKinds<'a, S> {
    read_only: &'a [bool],
    extension: &'a [bool],
    /// The state an overwrite sets; `None` for other operations.
    overwrite: &'a [Option<S>],
}

/// Look-ahead: the first pending read near the front that can no longer become legal from
/// `state`, if any (as a local op id). Walks the front of the list (the operations that could come next, in time
/// order) until the first call of a write that is neither an extension nor an overwrite.
/// A read whose return comes before that point follows `state`, with only extensions,
/// reads and the overwrites seen so far in between: it must be reachable by extensions from
/// `state` or from the state one of those overwrites sets.
fn unreachable_read<'h, M: Model>(
    list: &EntryList,
    state: &M::State,
    kinds: &OpKinds<'_, M::State>,
    op_of: impl Fn(u32) -> &'h Operation<M::Input, M::Output>,
) -> Option<u32>
where
    M::Input: 'h,
    M::Output: 'h,
{
    /// Bounds on the walk, so a node costs O(1) whatever the concurrency.
    const MAX_WALK: usize = 256;
    const MAX_READS: usize = 4;
    const MAX_BASES: usize = 8;
    let mut bases: Vec<&M::State> = vec![state];
    let mut reads = 0;
    let mut e = list.first();
    for _ in 0..MAX_WALK {
        if e == NIL {
            break;
        }
        let local = list.op[e as usize] as usize;
        if list.is_call(e) {
            if let Some(set_to) = &kinds.overwrite[local] {
                if bases.len() == MAX_BASES {
                    break;
                }
                bases.push(set_to);
            } else if !kinds.read_only[local] && !kinds.extension[local] {
                break;
            }
        } else if kinds.read_only[local] {
            let op = op_of(local as u32);
            if !bases
                .iter()
                .any(|b| M::may_extend_to(b, &op.input, &op.output))
            {
                return Some(local as u32);
            }
            reads += 1;
            if reads == MAX_READS {
                break;
            }
        }
        e = list.next[e as usize];
    }
    None
}

/// One lifted call on the search stack.
struct Frame<S> {
    /// The call entry lifted.
    call: u32,
    /// The state before it, restored on backtracking.
    before: S,
    /// Taken without alternatives (a legal read-only operation): backtracking over it
    /// backtracks over its parent too.
    forced: bool,
}

/// Builds the violation report from the deepest prefix: replays it for the states, and
/// says for each operation that could have come next why it could not.
fn explain<M: Model>(
    history: &[Operation<M::Input, M::Output>],
    part: &Partition,
    list: &mut EntryList,
    pos_of_local: &[usize],
    deepest: &[u32],
    kinds: Option<&OpKinds<'_, M::State>>,
) -> Violation {
    let op_of = |local: u32| &history[part.ops[pos_of_local[local as usize]]];
    let summary = |local: u32| {
        let index = part.ops[pos_of_local[local as usize]];
        let op = &history[index];
        OpSummary {
            index,
            client_id: op.client_id,
            call: op.call,
            return_time: op.return_time,
            description: M::describe_operation(&op.input, &op.output),
        }
    };
    // Replay the prefix, lifting its calls as the search did (the search undid every lift,
    // so the list is back in its original state).
    let mut states = Vec::with_capacity(deepest.len());
    let mut state = M::init();
    for &call in deepest {
        let op = op_of(list.op[call as usize]);
        // The search took this step, so the model accepts it; keep the state if not.
        if let Some(next) = M::step(&state, &op.input, &op.output) {
            state = next;
        }
        states.push(state.clone());
        list.lift(call);
    }
    // Describe states from the end until the text budget is spent.
    let mut texts: Vec<Option<String>> = vec![None; states.len()];
    let mut budget = Violation::STATE_TEXT_BUDGET;
    for (text, s) in texts.iter_mut().zip(&states).rev() {
        let t = M::describe_state(s);
        if t.len() > budget {
            break;
        }
        budget -= t.len();
        *text = Some(t);
    }
    let prefix = deepest
        .iter()
        .zip(texts)
        .map(|(&call, state_after)| LinearizedOp {
            op: summary(list.op[call as usize]),
            state_after,
        })
        .collect();
    // Candidates after the prefix: pending calls before the first pending return.
    let mut candidates = Vec::new();
    let mut e = list.first();
    while e != NIL && list.is_call(e) {
        candidates.push(e);
        e = list.next[e as usize];
    }
    let stuck = candidates
        .into_iter()
        .map(|call| {
            let local = list.op[call as usize];
            let op = op_of(local);
            let why = match M::step(&state, &op.input, &op.output) {
                None => WhyStuck::Illegal,
                Some(after) => {
                    list.lift(call);
                    let read = kinds.and_then(|k| unreachable_read::<M>(list, &after, k, op_of));
                    list.unlift(call);
                    match read {
                        Some(read) => WhyStuck::StrandsRead(summary(read)),
                        None => WhyStuck::NoWayOn,
                    }
                }
            };
            StuckOp {
                op: summary(local),
                why,
            }
        })
        .collect();
    for &call in deepest.iter().rev() {
        list.unlift(call);
    }
    Violation {
        partition: part.label.clone(),
        partition_ops: pos_of_local.len(),
        prefix,
        final_state: M::describe_state(&state),
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::super::kv::{KvInput, KvModel, KvOp, KvOutput};
    use super::*;

    fn op(
        client_id: u64,
        op: KvOp,
        value: &str,
        call: u64,
        ret: u64,
    ) -> Operation<KvInput, KvOutput> {
        let get = op == KvOp::Get;
        Operation {
            client_id,
            input: KvInput {
                op,
                key: "x".into(),
                value: if get { String::new() } else { value.into() },
            },
            call,
            output: KvOutput {
                value: if get { value.into() } else { String::new() },
            },
            return_time: ret,
        }
    }

    #[test]
    fn pruned_search_names_the_stranded_read() {
        // Two concurrent appends read in both orders: with look-ahead, either append first
        // strands one of the reads before any read is tried.
        let h = vec![
            op(1, KvOp::Append, "a", 0, 10),
            op(2, KvOp::Append, "b", 0, 10),
            op(3, KvOp::Get, "ab", 11, 12),
            op(3, KvOp::Get, "ba", 13, 14),
        ];
        let part = Partition {
            label: "x".into(),
            ops: (0..h.len()).collect(),
        };
        let control = Control {
            deadline: None,
            stop_after: AtomicUsize::new(usize::MAX),
        };
        let outcome = search::<KvModel>(&h, &part, 0, &control, Instant::now(), true, u64::MAX);
        let Outcome::Illegal(v) = outcome else {
            panic!("expected a violation")
        };
        assert!(v.prefix.is_empty());
        assert_eq!(v.stuck_indices(), vec![0, 1]);
        assert!(matches!(&v.stuck[0].why, WhyStuck::StrandsRead(r) if r.index == 3));
        assert!(matches!(&v.stuck[1].why, WhyStuck::StrandsRead(r) if r.index == 2));
        assert!(v.to_string().contains("could never be satisfied"));
    }
}
