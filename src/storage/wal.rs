//! How the files of a data directory are framed (format 2), and how a file is read back so
//! that it cannot lie: [`scan`] tells a torn final write, which a crash leaves and recovery
//! cuts, from damage anywhere else, which it refuses with the offset and what is wrong.
//!
//! A file is a 20-byte header `[magic 6][format version u16][file id u64][CRC32 u32]` (the
//! magic names the file's kind, `RKVWAL` or `RKVSNP`; the file id is drawn at random when the
//! file is created; the CRC covers the 16 bytes before it) followed by records. A record is a
//! 20-byte header `[payload length u32][payload CRC32 u32][offset u64][header CRC32 u32]` and
//! the payload (integers little-endian). The header CRC covers the file id and the header's
//! first 16 bytes, so a damaged length is caught before it is believed; the offset is where the
//! record was written, so a record found anywhere else (moved, duplicated) is refused; the file
//! id keeps a stale record of an older file, which a crash may expose in a torn tail, from
//! passing as one of this file. Format 1 had neither file header nor header CRC: a damaged
//! length read as a torn tail, and recovery cut every record after it.
//!
//! The WAL is preallocated: zeros are written past its last record, so that an append
//! overwrites blocks already on disk and its fsync has no file size to record. Zeros are
//! never a record: a record's offset is at least the file header's length, so no valid
//! record header is all zeros. A snapshot file is not preallocated: zeros after its record
//! are bytes like any other.
//!
//! ## What a torn tail is
//!
//! A file is created whole: written to a temporary name, fsynced and renamed, so its header is
//! never torn. The WAL then grows by one record per save: the framed record is written over
//! the zeros after the last one (with more zeros after it when the file must grow), then
//! fsynced, and the next save starts only once that fsync has succeeded (after a failed one
//! the store takes no more writes). So a crash can only leave the last record unfinished: the
//! bytes after the last complete record are part of that one record, some of which never
//! reached the disk (they are missing, or read as zeros: the preallocated ones, or those where
//! the file's size got there before its data). What follows the last valid record is a clean
//! end when it is only zeros (or nothing): space for records to come, or a record of which
//! nothing reached the disk. It is cut as a torn tail exactly when it is one of:
//!
//! 1. fewer bytes than a record header;
//! 2. a header whose CRC holds, whose payload runs past the end of the file;
//! 3. a header whose CRC holds, whose payload fails its CRC, with only zeros after it;
//! 4. a header whose CRC fails, with no complete valid record anywhere after it (a torn
//!    header leaves the length unknown, but no save can have completed after the torn one).
//!
//! Everything else is refused: a short, damaged or foreign file header, a payload that fails
//! its CRC with other bytes than zeros after it, a header that fails its CRC with a valid
//! record of the file anywhere after it, a record that says it was written at another
//! offset. A damaged *final* record (a flipped bit in the last save) cannot be told from a
//! torn one and is cut too: at most the last record, never one before it. Nor can zeros at
//! the end: the file's length does not say where the records end, so damage that zeroes
//! every byte from inside record k to the end of the file reads as record k torn, as a file
//! cut short there always did.

use std::fmt;
use std::io;
use std::ops::Range;

/// The format this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 2;
/// Bytes of the file header: magic, format version, file id, CRC.
pub(crate) const FILE_HEADER_LEN: usize = 20;
/// Bytes before each payload: length, payload CRC, offset, header CRC.
pub(crate) const RECORD_HEADER_LEN: usize = 20;

/// Which file a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// The write-ahead log.
    Wal,
    /// A snapshot file (exactly one record).
    Snapshot,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 6] {
        match self {
            FileKind::Wal => b"RKVWAL",
            FileKind::Snapshot => b"RKVSNP",
        }
    }

    /// The header of a file of this kind whose id is `file_id`.
    pub(crate) fn header(self, file_id: u64) -> [u8; FILE_HEADER_LEN] {
        let mut header = [0; FILE_HEADER_LEN];
        header[..6].copy_from_slice(self.magic());
        header[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&file_id.to_le_bytes());
        let crc = crc32fast::hash(&header[..16]);
        header[16..].copy_from_slice(&crc.to_le_bytes());
        header
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Wal => "WAL",
            FileKind::Snapshot => "snapshot file",
        })
    }
}

/// The CRC of a record header: over the file id and the header's first 16 bytes.
fn header_crc(file_id: u64, header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&file_id.to_le_bytes());
    hasher.update(&header[..16]);
    hasher.finalize()
}

/// Frames `payload` as the record that starts at `offset` of the file whose id is `file_id`.
/// Fails for a payload of 4 GiB or more, which a length field cannot hold.
pub(crate) fn frame(file_id: u64, offset: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    record.resize(RECORD_HEADER_LEN, 0);
    record.extend_from_slice(payload);
    seal(file_id, offset, &mut record)?;
    Ok(record)
}

/// Frames in place the payload that follows `RECORD_HEADER_LEN` bytes of room in `record`:
/// fills in the header, as [`frame`] would, so that a save encodes its payload straight into
/// the bytes it writes.
pub(crate) fn seal(file_id: u64, offset: u64, record: &mut [u8]) -> io::Result<()> {
    let (header, payload) = record.split_at_mut(RECORD_HEADER_LEN);
    let len = u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a record of {} bytes does not fit a WAL record",
                payload.len()
            ),
        )
    })?;
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = header_crc(file_id, header);
    header[16..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A whole new file of `kind` (with a fresh random id) holding the records `payloads`, in
/// order; returns its bytes and its id.
pub(crate) fn file_of<'a>(
    kind: FileKind,
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<(Vec<u8>, u64)> {
    let file_id = rand::random();
    let mut bytes = kind.header(file_id).to_vec();
    for payload in payloads {
        let record = frame(file_id, bytes.len() as u64, payload)?;
        bytes.extend_from_slice(&record);
    }
    Ok((bytes, file_id))
}

/// One valid record of a scanned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    /// Offset of its header.
    pub offset: usize,
    /// Where its payload is in the file.
    pub payload: Range<usize>,
}

impl RecordSpan {
    /// Offset just past the record.
    pub(crate) fn end(&self) -> usize {
        self.payload.end
    }
}

/// How a scanned file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// After its last valid record.
    Clean,
    /// With a torn final write from `offset` to the end of the file, which recovery cuts.
    Torn {
        /// Where the torn record starts.
        offset: usize,
        /// What it looks like.
        reason: String,
    },
    /// With damage at `offset` that no crash during an append can leave: the file is refused.
    Corrupt {
        /// Where the damaged header or record starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The valid records of a file and how it ends (they stop where a torn tail or damage
/// starts).
#[derive(Debug)]
pub(crate) struct Scan {
    /// The file's id (0 if its header is damaged).
    pub file_id: u64,
    /// The valid records, in order.
    pub records: Vec<RecordSpan>,
    /// How the file ends.
    pub end: End,
}

impl Scan {
    /// Length of the valid part: the end of the last valid record, or of the file header.
    pub(crate) fn valid_len(&self) -> usize {
        self.records.last().map_or(FILE_HEADER_LEN, RecordSpan::end)
    }
}

/// A record header: `(payload length, payload CRC, offset, header CRC)`.
type RecordHeader = (u32, u32, u64, u32);

/// The record header at `offset`, if `bytes` holds a whole one there.
fn read_header(bytes: &[u8], offset: usize) -> Option<RecordHeader> {
    let h = bytes.get(offset..offset.checked_add(RECORD_HEADER_LEN)?)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let at = u64::from(word(8)) | (u64::from(word(12)) << 32);
    Some((word(0), word(4), at, word(16)))
}

/// Whether the record header `header`, read at `offset`, passes its CRC as one of file
/// `file_id`. A record is written at or after the file header, so a header saying otherwise
/// (an all-zero one among them, which a CRC could pass once in 2^32 file ids) never does.
fn header_holds(bytes: &[u8], file_id: u64, offset: usize, header: &RecordHeader) -> bool {
    let (_, _, written_at, crc) = *header;
    written_at >= FILE_HEADER_LEN as u64 && crc == header_crc(file_id, &bytes[offset..])
}

/// The complete record at `offset` whose header and payload pass their CRCs as records of
/// file `file_id` (wherever they say they were written), if there is one.
fn valid_record_at(bytes: &[u8], file_id: u64, offset: usize) -> Option<RecordSpan> {
    let header = read_header(bytes, offset)?;
    if !header_holds(bytes, file_id, offset, &header) {
        return None;
    }
    let (len, payload_crc, _, _) = header;
    let start = offset + RECORD_HEADER_LEN;
    let payload = start..start.checked_add(len as usize)?;
    (crc32fast::hash(bytes.get(payload.clone())?) == payload_crc)
        .then_some(RecordSpan { offset, payload })
}

/// The file's id, or what is wrong with its header.
fn check_file_header(kind: FileKind, bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(format!(
            "the file is {} bytes, shorter than its {FILE_HEADER_LEN}-byte header; a {kind} \
             is created whole with its header, so this is damage (or a format-1 {kind} that \
             never held a record), not a torn write",
            bytes.len()
        ));
    }
    if &bytes[..6] != kind.magic() {
        return Err(if looks_like_format_1(bytes) {
            format!(
                "a format-1 {kind} (no file header: written by RainKV before format \
                 {FORMAT_VERSION}); this build reads format {FORMAT_VERSION} only"
            )
        } else {
            format!(
                "not a RainKV {kind}: it starts with {:02x?}, not the magic {:?}",
                &bytes[..6],
                String::from_utf8_lossy(kind.magic())
            )
        });
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc != crc32fast::hash(&bytes[..16]) {
        return Err("the file header fails its checksum".into());
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads format {FORMAT_VERSION} only"
        ));
    }
    let mut id = [0; 8];
    id.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_le_bytes(id))
}

/// Whether `bytes` start with a whole format-1 record (`[length u32][CRC32 u32][payload]`).
fn looks_like_format_1(bytes: &[u8]) -> bool {
    let Some(word) = bytes.get(..8) else {
        return false;
    };
    let len = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) as usize;
    let crc = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
    bytes
        .get(8..8 + len)
        .is_some_and(|payload| crc32fast::hash(payload) == crc)
}

/// Reads a file of `kind` (see the module docs for what is cut and what is refused).
pub(crate) fn scan(kind: FileKind, bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let file_id = match check_file_header(kind, bytes) {
        Ok(id) => id,
        Err(reason) => {
            let end = End::Corrupt { offset: 0, reason };
            return Scan {
                file_id: 0,
                records,
                end,
            };
        }
    };
    // Only zeros follow `data_end`: a clean end once the records reach it.
    let data_end = match kind {
        FileKind::Wal => bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1),
        FileKind::Snapshot => bytes.len(),
    };
    let mut offset = FILE_HEADER_LEN;
    let end = loop {
        if offset >= data_end {
            break End::Clean;
        }
        let rest = bytes.len() - offset;
        let Some(header) = read_header(bytes, offset) else {
            break End::Torn {
                offset,
                reason: format!(
                    "{rest} of a record header's {RECORD_HEADER_LEN} bytes before the end of \
                     the file"
                ),
            };
        };
        let (len, payload_crc, written_at, _) = header;
        if !header_holds(bytes, file_id, offset, &header) {
            break damaged_header(bytes, data_end, file_id, offset);
        }
        if written_at != offset as u64 {
            break End::Corrupt {
                offset,
                reason: format!(
                    "a record written at offset {written_at} is found here (moved or \
                     duplicated data)"
                ),
            };
        }
        let start = offset + RECORD_HEADER_LEN;
        let end = start + len as usize;
        if end > bytes.len() {
            break End::Torn {
                offset,
                reason: format!(
                    "the record's header says {len} payload bytes, the file ends after {}",
                    bytes.len() - start
                ),
            };
        }
        if crc32fast::hash(&bytes[start..end]) != payload_crc {
            break if end >= data_end {
                End::Torn {
                    offset,
                    reason: "the final record's payload fails its checksum, with only zeros \
                             after it (a write cut short)"
                        .into(),
                }
            } else {
                End::Corrupt {
                    offset,
                    reason: format!(
                        "the record's payload ({len} bytes) fails its checksum, and other \
                         bytes than zeros follow it (up to offset {data_end}): not a torn \
                         final write"
                    ),
                }
            };
        }
        records.push(RecordSpan {
            offset,
            payload: start..end,
        });
        offset = end;
    };
    Scan {
        file_id,
        records,
        end,
    }
}

/// A header at `offset` that fails its checksum: torn if no valid record of the file follows
/// it anywhere (wherever it says it was written, so data shifted by lost or added bytes counts).
/// Only zeros follow `data_end`, and a valid record's header is never all zeros, so the
/// search stops there instead of walking the preallocated zeros.
fn damaged_header(bytes: &[u8], data_end: usize, file_id: u64, offset: usize) -> End {
    let rest = bytes.len() - offset;
    let later = (offset + 1..data_end).find_map(|at| valid_record_at(bytes, file_id, at));
    match later {
        Some(record) => End::Corrupt {
            offset,
            reason: format!(
                "the record header fails its checksum (so its length cannot be trusted), and a \
                 valid record follows at offset {}: not a torn final write",
                record.offset
            ),
        },
        None => End::Torn {
            offset,
            reason: format!(
                "a record header that fails its checksum, then no valid record in the \
                 remaining {rest} bytes"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 records of varying sizes (0 to a few KiB).
    fn payloads() -> Vec<Vec<u8>> {
        (0..20u8)
            .map(|i| {
                let len = [0, 1, 7, 12, 100, 300, 2000][usize::from(i) % 7] + usize::from(i);
                (0..len).map(|j| (j as u8).wrapping_mul(31) ^ i).collect()
            })
            .collect()
    }

    fn wal_of(payloads: &[Vec<u8>]) -> Vec<u8> {
        file_of(FileKind::Wal, payloads.iter().map(Vec::as_slice))
            .unwrap()
            .0
    }

    fn payloads_of<'a>(bytes: &'a [u8], scan: &Scan) -> Vec<&'a [u8]> {
        scan.records
            .iter()
            .map(|r| &bytes[r.payload.clone()])
            .collect()
    }

    /// Offsets of each record of `wal_of(payloads)`, and the file's length last.
    fn boundaries(payloads: &[Vec<u8>]) -> Vec<usize> {
        let mut at = vec![FILE_HEADER_LEN];
        for p in payloads {
            at.push(at[at.len() - 1] + RECORD_HEADER_LEN + p.len());
        }
        at
    }

    /// Asserts that `bytes` (damaged `what`) is refused, or cut at the start of the last
    /// record with every other record intact: never accepted with a record lost before it.
    /// Returns whether it was refused.
    fn refused_or_cut_at_the_last(bytes: &[u8], payloads: &[Vec<u8>], what: &str) -> bool {
        let s = scan(FileKind::Wal, bytes);
        let last = boundaries(payloads)[payloads.len() - 1];
        match &s.end {
            End::Corrupt { .. } => true,
            End::Torn { offset, reason } => {
                assert_eq!(*offset, last, "{what}: torn at {offset} ({reason})");
                let n = payloads.len() - 1;
                let expected: Vec<&[u8]> = payloads[..n].iter().map(Vec::as_slice).collect();
                assert_eq!(payloads_of(bytes, &s), expected, "{what}");
                false
            }
            End::Clean => panic!("{what}: accepted as clean"),
        }
    }

    #[test]
    fn round_trips_records() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let s = scan(FileKind::Wal, &bytes);
        assert_eq!(s.end, End::Clean);
        let expected: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        assert_eq!(payloads_of(&bytes, &s), expected);
        assert_eq!(s.valid_len(), bytes.len());
        let empty = wal_of(&[]);
        assert_eq!(empty.len(), FILE_HEADER_LEN);
        let s = scan(FileKind::Wal, &empty);
        assert_eq!(
            (s.records.len(), &s.end, s.valid_len()),
            (0, &End::Clean, FILE_HEADER_LEN)
        );
    }

    #[test]
    fn every_single_byte_flip_is_refused_or_cuts_only_the_last_record() {
        let payloads = payloads();
        let used = wal_of(&payloads).len();
        let last = boundaries(&payloads)[payloads.len() - 1];
        // As written, and preallocated: zeros after the records (a few headers' worth).
        for zeros in [0, 500] {
            let mut bytes = wal_of(&payloads);
            bytes.resize(used + zeros, 0);
            let mut flips = 0;
            for at in 0..bytes.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[at] ^= mask;
                    let what = format!("{at} ^ {mask:#x} with {zeros} zeros");
                    if at >= used {
                        // Not zeros any more: cut as a torn record, every record kept.
                        let s = scan(FileKind::Wal, &damaged);
                        assert!(
                            matches!(s.end, End::Torn { offset, .. } if offset == used),
                            "{what}: {:?}",
                            s.end
                        );
                        assert_eq!(s.records.len(), payloads.len(), "{what}");
                    } else {
                        let refused = refused_or_cut_at_the_last(&damaged, &payloads, &what);
                        // Only damage inside the last record may be taken for a torn write.
                        assert!(refused || at >= last, "{what} was cut");
                    }
                    flips += 1;
                }
            }
            assert_eq!(flips, bytes.len() * 3);
            eprintln!("{flips} flips of a {used}-byte WAL of 20 records and {zeros} zeros");
        }
    }

    #[test]
    fn multi_byte_damage_is_refused_or_cuts_only_the_last_record() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let at = boundaries(&payloads);
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, &offset) in at[..payloads.len()].iter().enumerate() {
            for (name, fill) in [("zeroed", 0x00u8), ("all ones", 0xff)] {
                let mut d = bytes.clone();
                d[offset..offset + RECORD_HEADER_LEN].fill(fill);
                cases.push((format!("record {k}'s header {name}"), d));
            }
            let mut d = bytes.clone();
            d[offset + 4..offset + 8].fill(0);
            cases.push((format!("record {k}'s payload CRC zeroed"), d));
        }
        // Runs of 2, 3 and 9 bytes flipped, and a 512-byte sector zeroed, everywhere.
        for width in [2, 3, 9] {
            for start in (0..bytes.len() - width).step_by(5) {
                let mut d = bytes.clone();
                d[start..start + width].iter_mut().for_each(|b| *b ^= 0x5a);
                cases.push((format!("{width} bytes at {start} flipped"), d));
            }
        }
        for sector in (0..bytes.len()).step_by(512) {
            let mut d = bytes.clone();
            let end = (sector + 512).min(bytes.len());
            d[sector..end].fill(0);
            cases.push((format!("sector at {sector} zeroed"), d));
        }
        // (Zeroing the CRC of the empty payload, whose CRC is 0, changes nothing.)
        cases.retain(|(_, damaged)| *damaged != bytes);
        assert!(cases.len() > 3000, "{} cases", cases.len());
        eprintln!(
            "{} multi-byte damages of a {}-byte WAL",
            cases.len(),
            bytes.len()
        );
        for (what, damaged) in &cases {
            refused_or_cut_at_the_last(damaged, &payloads, what);
        }
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_refused() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let at = boundaries(&payloads);
        for k in [0, 5, 10, payloads.len() - 2] {
            let offset = at[k];
            let len = payloads[k].len() as u32;
            // Shorter, longer, past the end of the file, and zero.
            for wrong in [len.wrapping_sub(1), len + 1, u32::MAX, 0] {
                if wrong == len {
                    continue;
                }
                let mut d = bytes.clone();
                d[offset..offset + 4].copy_from_slice(&wrong.to_le_bytes());
                let s = scan(FileKind::Wal, &d);
                let End::Corrupt {
                    offset: bad,
                    reason,
                } = &s.end
                else {
                    panic!("length {wrong} of record {k}: {:?}", s.end);
                };
                assert_eq!(*bad, offset);
                assert!(reason.contains("header fails its checksum"), "{reason}");
                assert!(
                    reason.contains(&format!("offset {}", at[k + 1])),
                    "{reason}"
                );
                assert_eq!(s.records.len(), k, "the records before it are listed");
            }
        }
    }

    /// Also with the bytes after `len` zeroed instead of cut: the file's length does not say
    /// where the records end, so a zeroed suffix reads exactly as a truncation.
    #[test]
    fn a_truncation_at_every_length_leaves_a_prefix() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let at = boundaries(&payloads);
        for (len, zeroed) in (FILE_HEADER_LEN..=bytes.len()).flat_map(|n| [(n, false), (n, true)]) {
            let mut d = bytes[..len].to_vec();
            if zeroed {
                d.resize(bytes.len(), 0);
            }
            let s = scan(FileKind::Wal, &d);
            let what = format!("cut at {len}{}", if zeroed { ", zeros after" } else { "" });
            let whole = at.iter().filter(|&&b| b <= len).count() - 1;
            let expected: Vec<&[u8]> = payloads[..whole].iter().map(Vec::as_slice).collect();
            assert_eq!(payloads_of(&d, &s), expected, "{what}");
            match s.end {
                // (Nothing after the last record, or only zeros: the start of its header.)
                End::Clean => assert!(
                    bytes[at[whole]..len].iter().all(|&b| b == 0),
                    "{what}: clean only at a boundary or before zeros"
                ),
                End::Torn { offset, .. } => assert_eq!(offset, at[whole], "{what}"),
                End::Corrupt { offset, reason } => panic!("{what}: {offset}: {reason}"),
            }
        }
        // A file is created whole with its header: shorter is damage, not a tear.
        for len in 0..FILE_HEADER_LEN {
            let s = scan(FileKind::Wal, &bytes[..len]);
            assert!(matches!(s.end, End::Corrupt { offset: 0, .. }), "{len}");
        }
    }

    #[test]
    fn a_final_record_zeroed_from_any_point_is_torn() {
        // The file's size reached the disk, the end of its data did not; or the record was
        // written over preallocated zeros, and only its start reached the disk.
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let last = boundaries(&payloads)[payloads.len() - 1];
        for zeros in [0, 4096] {
            for from in last..bytes.len() {
                let mut d = bytes.clone();
                d[from..].fill(0);
                d.resize(bytes.len() + zeros, 0);
                let what = format!("zeros from {from}, {zeros} more after");
                if d[last..].iter().all(|&b| b == 0) {
                    // Nothing of it reached the disk: the records before end cleanly.
                    let s = scan(FileKind::Wal, &d);
                    assert_eq!((s.end, s.records.len()), (End::Clean, payloads.len() - 1));
                } else {
                    assert!(!refused_or_cut_at_the_last(&d, &payloads, &what), "{what}");
                }
            }
        }
        // A record torn in its middle (a block of it missing), with zeros after it.
        let mut d = bytes.clone();
        d[last + 30..last + 90].fill(0);
        d.resize(bytes.len() + 4096, 0);
        assert!(!refused_or_cut_at_the_last(
            &d,
            &payloads,
            "a hole in the last record"
        ));
    }

    #[test]
    fn zeros_after_the_last_record_are_a_clean_end() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let expected: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        // Fewer zeros than a header, a few headers' worth, a whole preallocated chunk.
        for zeros in [1, 19, 20, 21, 100, 4096, 4 << 20] {
            let mut d = bytes.clone();
            d.resize(bytes.len() + zeros, 0);
            let s = scan(FileKind::Wal, &d);
            assert_eq!(s.end, End::Clean, "{zeros} zeros");
            assert_eq!(payloads_of(&d, &s), expected, "{zeros} zeros");
            assert_eq!(s.valid_len(), bytes.len(), "{zeros} zeros");
        }
        // An empty WAL, preallocated.
        let mut empty = wal_of(&[]);
        empty.resize(4096, 0);
        let s = scan(FileKind::Wal, &empty);
        assert_eq!((s.records.len(), s.end), (0, End::Clean));
        // A snapshot file is never preallocated: zeros after its record are damage.
        let mut snap = file_of(FileKind::Snapshot, [&b"state"[..]]).unwrap().0;
        snap.resize(snap.len() + 100, 0);
        assert!(matches!(
            scan(FileKind::Snapshot, &snap).end,
            End::Torn { .. }
        ));
    }

    #[test]
    fn damage_before_a_zero_tail_is_refused() {
        let payloads = payloads();
        let used = wal_of(&payloads).len();
        let at = boundaries(&payloads);
        let mut bytes = wal_of(&payloads);
        bytes.resize(used + (64 << 10), 0);
        for k in [0, 7, payloads.len() - 2] {
            for (what, byte) in [("length", at[k]), ("payload", at[k] + RECORD_HEADER_LEN)] {
                if byte >= at[k + 1] {
                    continue; // (an empty payload)
                }
                let mut d = bytes.clone();
                d[byte] ^= 0x01;
                let s = scan(FileKind::Wal, &d);
                assert!(
                    matches!(s.end, End::Corrupt { offset, .. } if offset == at[k]),
                    "record {k}'s {what}: {:?}",
                    s.end
                );
                assert_eq!(s.records.len(), k);
            }
        }
    }

    /// A file id for which a record header of 20 zeros passes its CRC: CRC32 is affine over
    /// GF(2) in its input, so the id's 64 bits are solved for (one id in 2^32 does it).
    fn id_whose_zero_header_passes_its_crc() -> u64 {
        let crc_of = |id: u64| header_crc(id, &[0; 16]);
        // Rows of the system: [bit i of the id's effect | i], to cancel crc_of(0).
        let base = crc_of(0);
        let mut rows: Vec<(u32, u64)> = (0..64).map(|i| (crc_of(1 << i) ^ base, 1 << i)).collect();
        let (mut target, mut id) = (base, 0u64);
        for bit in 0..32 {
            let Some(pivot) = (0..rows.len()).find(|&r| rows[r].0 >> bit & 1 == 1) else {
                continue;
            };
            let (pivot_crc, pivot_id) = rows.swap_remove(pivot);
            for row in &mut rows {
                if row.0 >> bit & 1 == 1 {
                    *row = (row.0 ^ pivot_crc, row.1 ^ pivot_id);
                }
            }
            if target >> bit & 1 == 1 {
                target ^= pivot_crc;
                id ^= pivot_id;
            }
        }
        assert_eq!(target, 0, "solved");
        assert_eq!(header_crc(id, &[0; 16]), 0);
        id
    }

    #[test]
    fn a_header_of_zeros_is_never_a_record() {
        let id = id_whose_zero_header_passes_its_crc();
        // A preallocated WAL of that id: the zeros are its end, not an empty record.
        let mut bytes = FileKind::Wal.header(id).to_vec();
        let record = frame(id, bytes.len() as u64, b"one").unwrap();
        bytes.extend_from_slice(&record);
        let used = bytes.len();
        bytes.resize(used + 4096, 0);
        let s = scan(FileKind::Wal, &bytes);
        assert_eq!((s.records.len(), s.end), (1, End::Clean));
        // A torn record, zeros, then damage: no zero header is found as a "valid record"
        // after it, so it is cut, not refused.
        let mut d = bytes.clone();
        d[used] = 7;
        d[used + 300] = 7;
        let s = scan(FileKind::Wal, &d);
        assert!(
            matches!(s.end, End::Torn { offset, .. } if offset == used),
            "{:?}",
            s.end
        );
        assert_eq!(valid_record_at(&bytes, id, used + 40), None);
    }

    #[test]
    fn moved_records_and_shifted_data_are_refused() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let at = boundaries(&payloads);
        // Record 3 in place of record 2: valid, but written for another offset.
        let mut d = bytes.clone();
        d.splice(at[2]..at[3], bytes[at[3]..at[4]].to_vec());
        let End::Corrupt { offset, reason } = scan(FileKind::Wal, &d).end else {
            panic!("a moved record accepted");
        };
        assert_eq!(offset, at[2]);
        assert!(
            reason.contains(&format!("written at offset {}", at[3])),
            "{reason}"
        );
        // Bytes lost or added in the middle: every later record sits at the wrong offset, but
        // they are still found, so the damage is no torn tail.
        for (what, range, insert) in [
            ("lost", at[4] + 5..at[4] + 9, vec![]),
            ("added", at[4] + 5..at[4] + 5, vec![7; 3]),
        ] {
            let mut d = bytes.clone();
            d.splice(range, insert);
            let s = scan(FileKind::Wal, &d);
            assert!(
                matches!(s.end, End::Corrupt { .. }),
                "bytes {what}: {:?}",
                s.end
            );
        }
    }

    #[test]
    fn a_stale_record_of_another_file_is_not_taken_for_one_of_this_file() {
        let payloads = payloads();
        let bytes = wal_of(&payloads);
        let at = boundaries(&payloads);
        // An older WAL with the same records: a crash may show its blocks in a torn tail.
        let older = wal_of(&payloads);
        let last = at[payloads.len() - 1];
        let mut d = bytes[..last].to_vec();
        d.extend_from_slice(&older[last..]);
        assert!(!refused_or_cut_at_the_last(
            &d,
            &payloads,
            "a stale last record"
        ));
    }

    #[test]
    fn foreign_files_are_refused_with_what_they_are() {
        let bytes = wal_of(&payloads());
        let snap = file_of(FileKind::Snapshot, [&b"state"[..]]).unwrap().0;
        let refusal = |kind, bytes: &[u8]| match scan(kind, bytes).end {
            End::Corrupt { offset: 0, reason } => reason,
            other => panic!("accepted: {other:?}"),
        };
        assert!(refusal(FileKind::Wal, &snap).contains("not a RainKV WAL"));
        assert!(refusal(FileKind::Snapshot, &bytes).contains("not a RainKV snapshot file"));

        // Another format version, with a header otherwise right.
        let mut header = FileKind::Wal.header(5);
        header[6..8].copy_from_slice(&3u16.to_le_bytes());
        let crc = crc32fast::hash(&header[..16]);
        header[16..].copy_from_slice(&crc.to_le_bytes());
        let reason = refusal(FileKind::Wal, &header);
        assert!(reason.contains("format version 3"), "{reason}");

        // Format 1: records framed [length][CRC32][payload], no file header.
        let mut old = Vec::new();
        for p in [&b"one"[..], b"two"] {
            old.extend_from_slice(&(p.len() as u32).to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            old.extend_from_slice(p);
        }
        let reason = refusal(FileKind::Wal, &old);
        assert!(reason.contains("format-1 WAL"), "{reason}");
        assert!(refusal(FileKind::Wal, &[]).contains("0 bytes"));
    }
}
