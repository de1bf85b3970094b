//! The write-ahead log's record framing: `[length u32 LE][crc32 u32 LE][payload]`.
//!
//! [`scan`] reads records back and tells a torn tail (the last record cut short by a crash,
//! which is expected and cut off) from corruption in the middle of the file (which is not, and
//! refuses with the file's offset): a record that fails its checksum or length check but is
//! followed by more bytes cannot have been torn by a crash during an append.

use std::fmt;

/// Bytes before each payload: length and checksum.
pub(crate) const HEADER_LEN: usize = 8;
/// Largest payload accepted; a bigger length prefix is corruption, not a record.
pub(crate) const MAX_RECORD_LEN: usize = 256 << 20;

/// Frames `payload` as one record.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// The records of a log file, and where the valid part ends.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    /// Payloads of the valid records, in order.
    pub records: Vec<&'a [u8]>,
    /// Length of the valid prefix; anything after it is a torn tail.
    pub valid_len: usize,
}

/// A record that is damaged and not at the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    /// Offset of the damaged record's header.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt record at offset {}: {}",
            self.offset, self.reason
        )
    }
}

/// Splits `bytes` into records. A damaged final record is a torn tail (`valid_len` stops before
/// it); a damaged record with more data after it is an error.
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan<'_>, Corruption> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER_LEN {
            break; // torn header
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD_LEN {
            return Err(Corruption {
                offset,
                reason: format!("length {len} exceeds the {MAX_RECORD_LEN}-byte limit"),
            });
        }
        let end = HEADER_LEN + len;
        if rest.len() < end {
            break; // torn payload: the file ends inside this record
        }
        let payload = &rest[HEADER_LEN..end];
        if crc32fast::hash(payload) != crc {
            if rest.len() == end {
                break; // the last record, partly written
            }
            return Err(Corruption {
                offset,
                reason: "checksum mismatch".to_string(),
            });
        }
        records.push(payload);
        offset += end;
    }
    Ok(Scan {
        records,
        valid_len: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().flat_map(|p| frame(p)).collect()
    }

    #[test]
    fn round_trips_records() {
        let bytes = log_of(&[b"one", b"", b"three"]);
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.records, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(scan.valid_len, bytes.len());
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let mut bytes = log_of(&[b"one", b"two"]);
        let whole = bytes.len();
        bytes.truncate(whole - 1);
        let s = scan(&bytes).unwrap();
        assert_eq!(s.records, vec![&b"one"[..]]);
        assert_eq!(s.valid_len, HEADER_LEN + 3);
        // A torn header.
        let mut bytes = log_of(&[b"one"]);
        bytes.extend_from_slice(&[5, 0, 0]);
        assert_eq!(scan(&bytes).unwrap().records.len(), 1);
        // A complete last record with a bad checksum: written partly, then the crash.
        let mut bytes = log_of(&[b"one", b"two"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(scan(&bytes).unwrap().records.len(), 1);
    }

    #[test]
    fn corruption_in_the_middle_is_refused_with_its_offset() {
        let mut bytes = log_of(&[b"one", b"two", b"three"]);
        let second = HEADER_LEN + 3;
        bytes[second + HEADER_LEN] ^= 0xff;
        let err = scan(&bytes).unwrap_err();
        assert_eq!(err.offset, second);
        assert!(err.to_string().contains("checksum"));
        let mut bytes = log_of(&[b"one", b"two"]);
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&bytes).unwrap_err().offset, 0);
    }
}
