//! What a failed check tells a person: the [`Violation`] record (the partition, the longest
//! linearizable prefix the search reached, and the operations that could not follow it) and
//! its `Display`, a multi-line explanation with client ids and call/return times in ms.

use std::fmt;

/// One operation of the history as it appears in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// Index of the operation in the history slice given to the checker.
    pub index: usize,
    /// The client that issued it.
    pub client_id: u64,
    /// Call time, virtual ns.
    pub call: u64,
    /// Return time, virtual ns.
    pub return_time: u64,
    /// The model's description, e.g. `get('k') -> 'v'`.
    pub description: String,
}

/// One step of the linearizable prefix: an operation and the state it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizedOp {
    /// The operation.
    pub op: OpSummary,
    /// The model's description of the state after it. Kept for the last steps only (up to
    /// [`Violation::STATE_TEXT_BUDGET`] bytes of text in all), `None` before them: states of a
    /// long append history would otherwise take memory quadratic in its length.
    pub state_after: Option<String>,
}

/// An operation that could have come next after the prefix, and why it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckOp {
    /// The operation.
    pub op: OpSummary,
    /// Why it cannot follow the prefix.
    pub why: WhyStuck,
}

/// Why an operation cannot come right after the linearizable prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhyStuck {
    /// The model rejects it in the state the prefix leaves (e.g. a Get reading another value).
    Illegal,
    /// It is legal there, but afterwards this read (which must come later, with only
    /// appends or puts possibly in between) can never be satisfied.
    StrandsRead(OpSummary),
    /// It is legal there, but every way to go on from it failed.
    NoWayOn,
}

/// Why a partition is not linearizable, as far as the search could tell.
///
/// The search found no order for the whole partition. The longest order it did find for a
/// prefix is in `prefix`. The operations in `stuck` are exactly the pending operations
/// called before the first of them returned, so one of them must come next; each says why
/// it cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The partition's label (the key, for the KV model).
    pub partition: String,
    /// How many operations the partition holds.
    pub partition_ops: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<LinearizedOp>,
    /// The model's description of the state after the prefix.
    pub final_state: String,
    /// The operations that could go next after the prefix (called before any pending
    /// operation returned), each with the reason it cannot; ordered by call time.
    pub stuck: Vec<StuckOp>,
}

impl Violation {
    /// Bytes of state text kept in `prefix[..].state_after`, counted from the end.
    pub const STATE_TEXT_BUDGET: usize = 1 << 20;
    /// How many prefix steps `Display` shows (the last ones).
    pub const PREFIX_SHOWN: usize = 12;
    /// Descriptions and states longer than this are shortened by `Display`.
    pub const TEXT_SHOWN: usize = 160;

    /// The stuck operation that returned first: by then one of `stuck` had to take effect.
    pub fn first_to_return(&self) -> Option<&OpSummary> {
        self.stuck
            .iter()
            .map(|s| &s.op)
            .min_by_key(|o| (o.return_time, o.call))
    }

    /// History indices of the stuck operations.
    pub fn stuck_indices(&self) -> Vec<usize> {
        self.stuck.iter().map(|s| s.op.index).collect()
    }

    /// History indices of the prefix operations, in linearization order.
    pub fn prefix_indices(&self) -> Vec<usize> {
        self.prefix.iter().map(|s| s.op.index).collect()
    }
}

/// Formats virtual nanoseconds as milliseconds with microsecond precision.
pub(crate) fn ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, (ns / 1_000) % 1_000)
}

/// Shortens `text` to about `max` characters, keeping its start and (mostly) its end, where
/// appended values differ.
pub(crate) fn abbreviate(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let head_len = max / 4;
    let tail_len = max - head_len;
    let head: String = text.chars().take(head_len).collect();
    let tail: String = text.chars().skip(count - tail_len).collect();
    format!(
        "{head}…[{} chars omitted]…{tail}",
        count - head_len - tail_len
    )
}

fn op_line(f: &mut fmt::Formatter<'_>, prefix: &str, op: &OpSummary) -> fmt::Result {
    writeln!(
        f,
        "{prefix}client {:<3} [{:>10} ms, {:>10} ms]  #{:<6} {}",
        op.client_id,
        ms(op.call),
        ms(op.return_time),
        op.index,
        abbreviate(&op.description, Violation::TEXT_SHOWN)
    )
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history of partition '{}' is not linearizable ({} operations)",
            self.partition, self.partition_ops
        )?;
        let shown = self.prefix.len().min(Self::PREFIX_SHOWN);
        writeln!(
            f,
            "longest linearizable prefix found: {} operations{}",
            self.prefix.len(),
            if shown < self.prefix.len() {
                format!(", the last {shown} of them:")
            } else if shown > 0 {
                ":".to_string()
            } else {
                String::new()
            }
        )?;
        let first_shown = self.prefix.len() - shown;
        for (i, step) in self.prefix.iter().enumerate().skip(first_shown) {
            op_line(f, &format!("  {:>5}. ", i + 1), &step.op)?;
            if let Some(state) = &step.state_after {
                writeln!(
                    f,
                    "            state now {}",
                    abbreviate(state, Self::TEXT_SHOWN)
                )?;
            }
        }
        writeln!(
            f,
            "state after the prefix: {}",
            abbreviate(&self.final_state, Self::TEXT_SHOWN)
        )?;
        writeln!(
            f,
            "none of these {} operations can come next:",
            self.stuck.len()
        )?;
        for stuck in &self.stuck {
            op_line(f, "         ", &stuck.op)?;
            match &stuck.why {
                WhyStuck::Illegal => writeln!(f, "            illegal in that state")?,
                WhyStuck::StrandsRead(read) => writeln!(
                    f,
                    "            legal, but then #{} (client {}, [{} ms, {} ms]) {} could \
                     never be satisfied",
                    read.index,
                    read.client_id,
                    ms(read.call),
                    ms(read.return_time),
                    abbreviate(&read.description, Self::TEXT_SHOWN)
                )?,
                WhyStuck::NoWayOn => writeln!(
                    f,
                    "            legal, but no order of the remaining operations works after it"
                )?,
            }
        }
        if let Some(first) = self.first_to_return() {
            writeln!(
                f,
                "yet one of them must: #{} (client {}) returned at {} ms, and every other \
                 pending operation was called after that",
                first.index,
                first.client_id,
                ms(first.return_time)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviate_keeps_both_ends() {
        assert_eq!(abbreviate("short", 10), "short");
        let long = "a".repeat(10) + &"b".repeat(100) + "END";
        let short = abbreviate(&long, 20);
        assert!(short.starts_with("aaaaa"));
        assert!(short.ends_with("END"));
        assert!(short.contains("chars omitted"));
    }

    #[test]
    fn ms_formats_virtual_nanoseconds() {
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(1_234_567_890), "1234.567");
    }
}
