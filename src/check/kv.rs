//! The key/value model of the 6.5840 tests: Get, Put and Append on string keys, checked one key
//! at a time. Its state is a [`KvState`], a string stored as a persistent chain of appended
//! pieces, so that the search can copy, hash and compare states that grow to thousands of
//! appends without copying the text each time.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::model::{Model, Operation, Partition};

/// The KV model: one register of type string per key, initially `""`.
///
/// A Get is legal iff its output equals the value; a Put replaces the value; an Append
/// concatenates. The outputs of Put and Append are ignored (the clerk returns nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

/// The kind of a KV operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read the value of the key.
    Get,
    /// Replace the value of the key.
    Put,
    /// Append to the value of the key.
    Append,
}

/// The input of a KV operation. `value` is unused for a Get.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvInput {
    /// Get, Put or Append.
    pub op: KvOp,
    /// The key the operation touches; the history is partitioned by it.
    pub key: String,
    /// The value written (Put) or appended (Append).
    pub value: String,
}

/// The output of a KV operation: the value read by a Get, empty otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct KvOutput {
    /// What a Get returned.
    pub value: String,
}

impl Model for KvModel {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    /// One partition per key, in sorted key order, labelled with the key.
    fn partition_indices(history: &[Operation<KvInput, KvOutput>]) -> Vec<Partition> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.input.key.as_str()).or_default().push(i);
        }
        by_key
            .into_iter()
            .map(|(key, ops)| Partition {
                label: key.to_string(),
                ops,
            })
            .collect()
    }

    fn init() -> KvState {
        KvState::new()
    }

    fn step(state: &KvState, input: &KvInput, output: &KvOutput) -> Option<KvState> {
        match input.op {
            KvOp::Get => state.equals_str(&output.value).then(|| state.clone()),
            KvOp::Put => Some(KvState::from_str(&input.value)),
            KvOp::Append => Some(state.append(&input.value)),
        }
    }

    /// Gets never change the value.
    fn is_read_only(input: &KvInput, _output: &KvOutput) -> bool {
        input.op == KvOp::Get
    }

    /// Appends only extend the value.
    fn is_extension(input: &KvInput) -> bool {
        input.op == KvOp::Append
    }

    /// A Put sets the value whatever it was.
    fn is_overwrite(input: &KvInput) -> bool {
        input.op == KvOp::Put
    }

    /// With only appends before it, a later Get must read a value that starts with the
    /// current one. Checks the length and the last few bytes (where wrongly ordered appends
    /// differ), so the test costs O(1) however long the value.
    fn may_extend_to(state: &KvState, read_input: &KvInput, read_output: &KvOutput) -> bool {
        read_input.op != KvOp::Get || state.may_be_prefix_of(&read_output.value, 64)
    }

    fn describe_operation(input: &KvInput, output: &KvOutput) -> String {
        match input.op {
            KvOp::Get => format!("get('{}') -> '{}'", input.key, output.value),
            KvOp::Put => format!("put('{}', '{}')", input.key, input.value),
            KvOp::Append => format!("append('{}', '{}')", input.key, input.value),
        }
    }

    fn describe_state(state: &KvState) -> String {
        format!("'{state}'")
    }
}

/// The value of one key as the search sees it: an immutable string that shares its prefix
/// with the states it was appended to.
///
/// Cloning and appending are O(1) plus the appended text; hashing is O(1) (a rolling hash is
/// kept with each piece); equality first compares length and hash, then the text from the end,
/// and stops as soon as both sides reach the same shared piece.
#[derive(Clone, Default)]
pub struct KvState {
    tail: Option<Arc<Piece>>,
}

/// One appended piece, linked to the state it was appended to. Never empty.
struct Piece {
    prev: Option<Arc<Piece>>,
    text: Box<str>,
    /// Length in bytes of the whole string up to and including this piece.
    total_len: usize,
    /// Rolling hash of the whole string up to and including this piece.
    hash: u64,
}

/// The Mersenne prime 2^61 - 1: the modulus of the rolling hash.
const HASH_MODULUS: u64 = (1 << 61) - 1;
/// The base of the rolling hash (any value well inside the field works).
const HASH_BASE: u64 = 0x0ad1_53c5_e3b7_2f19 % HASH_MODULUS;

fn roll(mut hash: u64, text: &str) -> u64 {
    for &b in text.as_bytes() {
        let product = u128::from(hash) * u128::from(HASH_BASE) + u128::from(b) + 1;
        // Reduction modulo a Mersenne prime: fold the high bits onto the low ones.
        let folded = (product as u64 & HASH_MODULUS) + (product >> 61) as u64;
        hash = (folded & HASH_MODULUS) + (folded >> 61);
        if hash >= HASH_MODULUS {
            hash -= HASH_MODULUS;
        }
    }
    hash
}

impl KvState {
    /// The empty string.
    pub fn new() -> Self {
        KvState { tail: None }
    }

    /// A state holding `text`.
    #[allow(clippy::should_implement_trait)] // infallible, unlike FromStr
    pub fn from_str(text: &str) -> Self {
        KvState::new().append(text)
    }

    /// This string followed by `text`; `self` is unchanged.
    pub fn append(&self, text: &str) -> Self {
        if text.is_empty() {
            return self.clone();
        }
        let piece = Piece {
            prev: self.tail.clone(),
            text: text.into(),
            total_len: self.len() + text.len(),
            hash: roll(self.rolling_hash(), text),
        };
        KvState {
            tail: Some(Arc::new(piece)),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.tail.as_ref().map_or(0, |p| p.total_len)
    }

    /// Whether this is the empty string.
    pub fn is_empty(&self) -> bool {
        self.tail.is_none()
    }

    fn rolling_hash(&self) -> u64 {
        self.tail.as_ref().map_or(0, |p| p.hash)
    }

    /// Whether the string equals `text`, comparing from the end (where histories differ).
    pub fn equals_str(&self, text: &str) -> bool {
        if self.len() != text.len() {
            return false;
        }
        let bytes = text.as_bytes();
        let mut end = bytes.len();
        let mut piece = self.tail.as_deref();
        while let Some(p) = piece {
            let start = end - p.text.len();
            if &bytes[start..end] != p.text.as_bytes() {
                return false;
            }
            end = start;
            piece = p.prev.as_deref();
        }
        true
    }

    /// A quick necessary condition for `self` being a prefix of `text`: it is no longer, and
    /// its last `window` bytes (or more, up to a piece boundary) match `text` at the same
    /// place. `false` means "certainly not a prefix".
    pub fn may_be_prefix_of(&self, text: &str, window: usize) -> bool {
        if self.len() > text.len() {
            return false;
        }
        let bytes = text.as_bytes();
        let mut end = self.len();
        for p in self.pieces_rev() {
            if end + window <= self.len() {
                break;
            }
            let start = end - p.text.len();
            if &bytes[start..end] != p.text.as_bytes() {
                return false;
            }
            end = start;
        }
        true
    }

    /// The pieces from last to first.
    fn pieces_rev(&self) -> impl Iterator<Item = &Piece> {
        std::iter::successors(self.tail.as_deref(), |p| p.prev.as_deref())
    }
}

/// Compares two chains of equal total length from the end. Stops early when both cursors sit
/// at the end of the very same piece: everything before it is shared.
fn same_text(a: &Arc<Piece>, b: &Arc<Piece>) -> bool {
    let (mut pa, mut pb) = (a, b);
    let (mut ra, mut rb) = (pa.text.len(), pb.text.len());
    loop {
        if ra == pa.text.len() && rb == pb.text.len() && Arc::ptr_eq(pa, pb) {
            return true;
        }
        let k = ra.min(rb);
        if pa.text.as_bytes()[ra - k..ra] != pb.text.as_bytes()[rb - k..rb] {
            return false;
        }
        ra -= k;
        rb -= k;
        if ra == 0 {
            match &pa.prev {
                Some(p) => {
                    pa = p;
                    ra = p.text.len();
                }
                None => return rb == 0 && pb.prev.is_none(),
            }
        }
        if rb == 0 {
            match &pb.prev {
                Some(p) => {
                    pb = p;
                    rb = p.text.len();
                }
                None => return false,
            }
        }
    }
}

impl PartialEq for KvState {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() || self.rolling_hash() != other.rolling_hash() {
            return false;
        }
        match (&self.tail, &other.tail) {
            (Some(a), Some(b)) => same_text(a, b),
            _ => true, // both empty: the lengths matched
        }
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.rolling_hash());
    }
}

impl fmt::Display for KvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pieces: Vec<&Piece> = self.pieces_rev().collect();
        for p in pieces.iter().rev() {
            f.write_str(&p.text)?;
        }
        Ok(())
    }
}

impl fmt::Debug for KvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Drop for Piece {
    /// Unlinks the chain iteratively: a 100 000-piece string must not overflow the stack.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(arc) = next {
            match Arc::try_unwrap(arc) {
                Ok(mut piece) => next = piece.prev.take(),
                Err(_) => break, // still shared: its owner drops it
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_built_differently_is_equal_and_hashes_alike() {
        use std::collections::hash_map::DefaultHasher;
        let a = KvState::new().append("ab").append("c").append("de");
        let b = KvState::from_str("a").append("bcd").append("e");
        let c = KvState::from_str("abcde");
        assert_eq!(a, b);
        assert_eq!(b, c);
        let h = |s: &KvState| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(h(&a), h(&c));
        assert_ne!(a, KvState::from_str("abcdf"));
        assert_ne!(a, KvState::from_str("abcd"));
        assert_eq!(a.to_string(), "abcde");
        assert!(a.equals_str("abcde"));
        assert!(!a.equals_str("abcdx"));
        assert_eq!(KvState::from_str(""), KvState::new());
        assert!(KvState::new().equals_str(""));
    }

    #[test]
    fn shared_prefix_compares_by_pointer() {
        let base = KvState::from_str("x").append("y");
        assert_eq!(base.append("z"), base.append("z"));
        assert_ne!(base.append("z"), base.append("w"));
    }

    #[test]
    fn long_chain_drops_without_overflow() {
        let mut s = KvState::new();
        for i in 0..200_000 {
            s = s.append(if i % 2 == 0 { "a" } else { "b" });
        }
        assert_eq!(s.len(), 200_000);
        drop(s);
    }

    #[test]
    fn describes_operations_like_porcupine() {
        let get = KvInput {
            op: KvOp::Get,
            key: "k".into(),
            value: String::new(),
        };
        let out = KvOutput { value: "v".into() };
        assert_eq!(KvModel::describe_operation(&get, &out), "get('k') -> 'v'");
        let put = KvInput {
            op: KvOp::Put,
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(
            KvModel::describe_operation(&put, &KvOutput::default()),
            "put('k', 'v')"
        );
        let app = KvInput {
            op: KvOp::Append,
            ..put
        };
        assert_eq!(
            KvModel::describe_operation(&app, &KvOutput::default()),
            "append('k', 'v')"
        );
    }
}
