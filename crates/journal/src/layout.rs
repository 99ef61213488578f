//! The keys of the journal's sled tree. This is the on-disk format, so every
//! choice here is fixed for a format version.
//!
//! Why one tree: sled makes one `apply_batch` atomic only within a tree, and a
//! commit must write its log frames, status pages, keys-by-state maps, counts,
//! runs and head as one unit. So everything lives in the default tree and a
//! one-byte prefix tells the kinds apart (`M` metadata, `L` log, `S` status
//! pages, `I` keys-by-state, `C` counts, `R` runs).
//!
//! Why the byte encodings: sled orders keys by their bytes, and the journal
//! reads in key order (resume from a cursor, `keys`, `keys_in_state`, the log
//! from position 0). Positions are unsigned and stored big-endian; keys and
//! pages are signed, so they are stored big-endian with the sign bit flipped,
//! which makes byte order equal numeric order, negative keys included.
//!
//! Why pages: sled 0.34 costs a few microseconds per write, so one write per
//! key would cap the journal near 30,000 events/s. Keys come in runs of
//! consecutive ids (keyset pagination), so [`PAGE`] of them share one status
//! value and one 64-bit map per state: a batch of 1,000 keys is about 16
//! writes.

use backfill_core::encode;

use crate::record::State;
use crate::{Error, Result};

/// Prefix of the metadata keys.
pub(crate) const META: u8 = b'M';
/// Prefix of the log frames, keyed by their first position.
pub(crate) const LOG: u8 = b'L';
/// Prefix of the status pages.
pub(crate) const STATUS: u8 = b'S';
/// Prefix of the keys-by-state maps.
pub(crate) const BITMAP: u8 = b'I';
/// Prefix of the counts by (state, reason).
pub(crate) const COUNT: u8 = b'C';
/// Prefix of the runs.
pub(crate) const RUN: u8 = b'R';

// The metadata keys: `M` and a name.
pub(crate) const META_FORMAT: &[u8] = b"Mformat";
pub(crate) const META_ID: &[u8] = b"Mid";
pub(crate) const META_MAPPING: &[u8] = b"Mmapping";
pub(crate) const META_SOURCE: &[u8] = b"Msource";
pub(crate) const META_TARGET: &[u8] = b"Mtarget";
pub(crate) const META_CURSOR: &[u8] = b"Mcursor";
pub(crate) const META_HEAD: &[u8] = b"Mhead";
pub(crate) const META_PASS: &[u8] = b"Mpass";

// Every metadata key is under the metadata prefix.
const _: () = assert!(
    META_FORMAT[0] == META
        && META_ID[0] == META
        && META_MAPPING[0] == META
        && META_SOURCE[0] == META
        && META_TARGET[0] == META
        && META_CURSOR[0] == META
        && META_HEAD[0] == META
        && META_PASS[0] == META
);

/// Keys per status page: consecutive keys (as keyset pagination produces)
/// share a page, so a batch of 1,000 keys is about 16 sled writes, not 1,000.
pub(crate) const PAGE: i64 = 64;

pub(crate) fn key_bytes(key: i64) -> [u8; 8] {
    // Big-endian with the sign bit flipped: byte order equals numeric order,
    // negative keys included.
    let mut bytes = key.to_be_bytes();
    bytes[0] ^= 0x80;
    bytes
}

pub(crate) fn key_from_bytes(bytes: &[u8]) -> Option<i64> {
    let mut array: [u8; 8] = bytes.try_into().ok()?;
    array[0] ^= 0x80;
    Some(i64::from_be_bytes(array))
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rest.len());
    out.push(prefix);
    out.extend_from_slice(rest);
    out
}

/// The key of the log frame whose first entry is at position `seq`.
pub(crate) fn log_key(seq: u64) -> Vec<u8> {
    prefixed(LOG, &seq.to_be_bytes())
}

/// The first log position of a stored frame, from its key (`L` + u64 BE);
/// `u64::MAX` for a malformed key, which no position matches.
pub(crate) fn frame_first_seq(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(u64::MAX)
}

/// The page of a key, and the key's offset within it.
pub(crate) fn page_of(key: i64) -> (i64, u8) {
    let offset = u8::try_from(key.rem_euclid(PAGE)).unwrap_or(0);
    (key.div_euclid(PAGE), offset)
}

/// The key of a status page.
pub(crate) fn page_key(page: i64) -> Vec<u8> {
    prefixed(STATUS, &key_bytes(page))
}

/// The page of a status page's key; `None` if it is malformed.
pub(crate) fn page_from_key(key: &[u8]) -> Option<i64> {
    key.get(1..).and_then(key_from_bytes)
}

/// The key of a page's map of the keys in `state`.
pub(crate) fn bitmap_key(state: State, page: i64) -> Vec<u8> {
    let mut out = vec![BITMAP, state.tag()];
    out.extend_from_slice(&key_bytes(page));
    out
}

/// The first key after every map of `state`: the end of a range over them.
pub(crate) fn bitmap_end(state: State) -> Vec<u8> {
    vec![BITMAP, state.tag() + 1]
}

/// The page of a keys-by-state map's key; `None` if it is malformed.
pub(crate) fn bitmap_page(key: &[u8]) -> Option<i64> {
    key.get(2..).and_then(key_from_bytes)
}

/// The key of a count: `C` and the encoded (state, reason).
pub(crate) fn count_key(bucket: &(State, Option<crate::Reason>)) -> Result<Vec<u8>> {
    let encoded = encode(&(bucket.0, &bucket.1)).map_err(|source| Error::Decode {
        what: "count key".into(),
        source,
    })?;
    Ok(prefixed(COUNT, &encoded))
}

/// The key of a run.
pub(crate) fn run_key(id: crate::RunId) -> Vec<u8> {
    prefixed(RUN, id.0.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_numeric_order() {
        let keys = [i64::MIN, -65, -64, -1, 0, 1, 63, 64, i64::MAX];
        for pair in keys.windows(2) {
            assert!(key_bytes(pair[0]) < key_bytes(pair[1]), "{pair:?}");
            assert!(page_key(pair[0]) < page_key(pair[1]), "{pair:?}");
        }
        for key in keys {
            assert_eq!(key_from_bytes(&key_bytes(key)), Some(key));
            assert_eq!(page_from_key(&page_key(key)), Some(key));
            assert_eq!(bitmap_page(&bitmap_key(State::Failed, key)), Some(key));
        }
        assert!(log_key(255) < log_key(256));
        assert_eq!(frame_first_seq(&log_key(300)), 300);
        assert_eq!(page_of(-1), (-1, 63));
        assert_eq!(page_of(64), (1, 0));
    }

    /// The bytes are the on-disk format: journals already written must still
    /// read.
    #[test]
    fn keys_are_pinned() {
        assert_eq!(log_key(258), b"L\0\0\0\0\0\0\x01\x02");
        assert_eq!(page_key(0), b"S\x80\0\0\0\0\0\0\0");
        assert_eq!(page_key(-1), b"S\x7f\xff\xff\xff\xff\xff\xff\xff");
        assert_eq!(bitmap_key(State::Applied, 1), b"I\x01\x80\0\0\0\0\0\0\x01");
        assert_eq!(bitmap_end(State::Applied), b"I\x02");
        let id = crate::RunId(uuid::Uuid::from_bytes([7; 16]));
        assert_eq!(run_key(id)[..], [&b"R"[..], &[7; 16]].concat()[..]);
        assert_eq!(count_key(&(State::Pending, None)).unwrap()[0], b'C');
    }
}
