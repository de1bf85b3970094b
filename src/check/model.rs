//! What the checker checks against: a recorded [`Operation`] and the [`Model`] trait, a
//! sequential specification of the object under test. The checker never looks inside inputs,
//! outputs or states; it only asks the model whether one operation may follow a state, and how
//! to split a history into parts that can be checked on their own.

use std::fmt::Debug;
use std::hash::Hash;

/// One completed operation of a recorded history.
///
/// Times are virtual nanoseconds since the start of the test; `call <= return_time`. Equal
/// times are common (the harness timer ticks once a millisecond) and are read as "concurrent":
/// an operation called at the very instant another returns may be ordered either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued the operation; used for display only.
    pub client_id: u64,
    /// What the client asked for.
    pub input: I,
    /// When the client called the operation (virtual ns).
    pub call: u64,
    /// What the client got back.
    pub output: O,
    /// When the operation returned to the client (virtual ns).
    pub return_time: u64,
}

/// A part of a history that the checker verifies on its own: indices into the history.
///
/// Models whose object is a collection of independent cells (one per key, for example) split
/// the history so that each search stays small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// How a failure names this part, e.g. the key.
    pub label: String,
    /// Indices into the history slice, in any order.
    pub ops: Vec<usize>,
}

/// A sequential specification: an initial state and a step function that says which
/// operations are legal in which state.
///
/// The associated functions take no `self`: a model is a type, not a value.
pub trait Model {
    /// The state of the object (or of one partition of it). Memoisation hashes and compares
    /// states, so both should be cheap; see [`super::KvState`] for a growing string done that way.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's input.
    type Input: Clone + Debug;
    /// An operation's output.
    type Output: Clone + Debug;

    /// Splits a history into independent parts, as index lists. The checker uses this one.
    ///
    /// The default keeps the whole history together under the label `"all"`. Partitions
    /// should come back in a stable order (the KV model sorts by key), because the first
    /// failing partition in that order is the one reported.
    fn partition_indices(history: &[Operation<Self::Input, Self::Output>]) -> Vec<Partition> {
        vec![Partition {
            label: "all".to_string(),
            ops: (0..history.len()).collect(),
        }]
    }

    /// Splits a history into independent parts, as copies of the operations.
    ///
    /// Derived from [`Model::partition_indices`]; override that one instead, so the checker
    /// and its reports can point at the original operations.
    fn partition(
        history: &[Operation<Self::Input, Self::Output>],
    ) -> Vec<Vec<Operation<Self::Input, Self::Output>>> {
        Self::partition_indices(history)
            .into_iter()
            .map(|p| p.ops.into_iter().map(|i| history[i].clone()).collect())
            .collect()
    }

    /// The state before any operation.
    fn init() -> Self::State;

    /// The state after applying `input` with result `output` to `state`, or `None` if the
    /// object could not have answered `output` in that state.
    fn step(state: &Self::State, input: &Self::Input, output: &Self::Output)
        -> Option<Self::State>;

    /// Whether the operation never changes the state: `step` returns either `None` or the
    /// state it was given, whatever that state. The default, `false`, is always safe.
    ///
    /// The search takes a legal read-only operation as soon as it may, without trying the
    /// alternatives: moving it earlier in any linearization keeps that linearization valid.
    /// On read-heavy histories this cuts the search by orders of magnitude; claiming it for
    /// an operation that does change the state makes the checker wrong.
    fn is_read_only(_input: &Self::Input, _output: &Self::Output) -> bool {
        false
    }

    /// Whether the operation can only extend the state (an Append): a hint for look-ahead
    /// pruning with [`Model::may_extend_to`]. The default, `false`, disables that pruning.
    fn is_extension(_input: &Self::Input) -> bool {
        false
    }

    /// Whether the operation sets the state regardless of what it was (a Put): `step`
    /// returns the same `Some` state whatever state it is given. Look-ahead pruning (see
    /// [`Model::may_extend_to`]) then considers the state it sets as a new starting point.
    /// The default, `false`, is always safe.
    fn is_overwrite(_input: &Self::Input) -> bool {
        false
    }

    /// Look-ahead pruning, optional. `read` is a read-only operation that can only be
    /// linearized after `state`, with nothing but read-only and extension operations (see
    /// [`Model::is_extension`]) possibly in between. Return `false` only if no sequence of
    /// extensions can take `state` to a state where `read` is legal; the search then
    /// abandons the current branch at once instead of discovering the dead end much later.
    /// (When overwrites may also come in between, the search asks again with each state
    /// they set, and prunes only if every answer is `false`.)
    ///
    /// The default, `true`, never prunes. A wrong `false` makes the checker wrong; a wrong
    /// `true` only makes it slower.
    fn may_extend_to(
        _state: &Self::State,
        _read_input: &Self::Input,
        _read_output: &Self::Output,
    ) -> bool {
        true
    }

    /// A short human description of an operation, such as `get('k') -> 'v'`.
    fn describe_operation(input: &Self::Input, output: &Self::Output) -> String;

    /// A human description of a state. The default is its `Debug` form.
    fn describe_state(state: &Self::State) -> String {
        format!("{state:?}")
    }
}
