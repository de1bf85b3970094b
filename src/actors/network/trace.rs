//! A running hash over every network event, to check determinism from outside a run.
//!
//! Each event (virtual time since the network started, kind, end, server, call id) is folded
//! into a 64-bit FNV-1a hash. Same seed and same binary must give the same hash; any divergence
//! in scheduling, randomness or message order shows up as a different hash.

/// FNV-1a over the fields of each event.
#[derive(Debug, Clone)]
pub(crate) struct TraceHash(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl TraceHash {
    pub(crate) fn new() -> Self {
        TraceHash(FNV_OFFSET)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        // A separator so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }

    /// Folds one event into the hash.
    pub(crate) fn record(
        &mut self,
        at_nanos: u128,
        kind: &str,
        end: &str,
        server: &str,
        call: u64,
    ) {
        self.bytes(&at_nanos.to_le_bytes());
        self.bytes(kind.as_bytes());
        self.bytes(end.as_bytes());
        self.bytes(server.as_bytes());
        self.bytes(&call.to_le_bytes());
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_fields_matter() {
        let mut a = TraceHash::new();
        a.record(1, "reply", "e", "s", 0);
        a.record(2, "drop", "e", "s", 1);
        let mut b = TraceHash::new();
        b.record(2, "drop", "e", "s", 1);
        b.record(1, "reply", "e", "s", 0);
        assert_ne!(a.value(), b.value());
        let mut c = TraceHash::new();
        c.record(1, "reply", "e", "s", 0);
        c.record(2, "drop", "e", "s", 1);
        assert_eq!(a.value(), c.value());
    }
}
