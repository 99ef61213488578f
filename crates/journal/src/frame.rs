//! The log's stored unit and its hash chain.
//!
//! Why frames: sled 0.34 rewrites a whole leaf node (up to 17 values) every
//! ten updates, and it writes any node larger than a quarter of its segment
//! size to a separate blob file that it never fsyncs. A whole commit stored
//! as one value (the first layout) therefore cost most of a commit's time in
//! rewrites, and its durability rested on files sled does not sync. A commit's
//! entries are instead cut into frames of about 64 KiB of canonical bytes, each
//! compressed as one LZ4 block (realistic events shrink about 5×): nodes stay
//! inside sled's own, fsynced log, and there are fewer bytes to write. Frames
//! are also the unit of parallel work within a commit.
//!
//! Why two hashes per entry: hashing every entry's bytes with the previous
//! hash (one long serial chain over ~1 KB inputs) was a quarter of a commit.
//! Each entry's bytes are now hashed on their own (its *leaf*, computed on all
//! cores) and the chain runs over the 32-byte leaves. That is as strong: an
//! entry's chain hash commits to its bytes and to every entry before it, so
//! changing, removing or moving any entry breaks every link from it on.
//!
//! Why LZ4: a flipped byte changes the decompressed output only from the
//! entry it lands in, so `verify_chain` still names that entry (or the
//! frame's first entry if the block no longer decompresses at all).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use backfill_core::{encode_into, Digest};
use blake3::hazmat::{hash_derive_key_context, ContextKey, HasherExt};
use serde::Serialize;

use crate::{Error, Result};

/// Domain of an entry's leaf hash (blake3 derive-key over its canonical
/// bytes).
pub const LEAF_DOMAIN: &str = "backfill/journal-leaf/v2";

/// Domain of the chain: an entry's hash is blake3 derive-key over the previous
/// entry's hash followed by its own leaf hash.
pub const LINK_DOMAIN: &str = "backfill/journal-link/v2";

/// Canonical bytes per frame before compression. With sled's segments of
/// [`crate::SEGMENT_SIZE`], a leaf of 17 frames stays inside sled's log even
/// when nothing compresses.
const FRAME_BYTES: usize = 64 * 1024;

/// Entries per unit of parallel work (a frame or two).
const CHUNK: usize = 64;

/// The hash chain, version 2: the hash of an entry whose canonical bytes are
/// `entry` and whose predecessor's hash is `prev` (all zeros for the first
/// entry). It is `link(prev, leaf(entry))`, where `leaf` is blake3 derive-key
/// with [`LEAF_DOMAIN`] and `link` is blake3 derive-key with [`LINK_DOMAIN`]
/// over the 64 bytes `prev ‖ leaf`. A test pins known values.
pub fn chain_hash(prev: &Digest, entry: &[u8]) -> Digest {
    link_hash(prev, &leaf_hash(entry))
}

// The derive-key context keys, hashed once rather than once per entry (the
// same output as `Hasher::new_derive_key`, which pinned values check).
static LEAF_KEY: LazyLock<ContextKey> = LazyLock::new(|| hash_derive_key_context(LEAF_DOMAIN));
static LINK_KEY: LazyLock<ContextKey> = LazyLock::new(|| hash_derive_key_context(LINK_DOMAIN));

pub(crate) fn leaf_hash(bytes: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new_from_context_key(&LEAF_KEY);
    hasher.update(bytes);
    Digest(*hasher.finalize().as_bytes())
}

pub(crate) fn link_hash(prev: &Digest, leaf: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new_from_context_key(&LINK_KEY);
    hasher.update(prev.as_bytes());
    hasher.update(leaf.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

fn too_big() -> Error {
    Error::Damaged {
        path: std::path::PathBuf::new(),
        problem: "a log frame larger than 4 GiB".into(),
    }
}

/// A frame encoded, leaf-hashed and compressed, waiting for its chain hashes
/// (which depend on every frame before it).
pub(crate) struct Sealed {
    /// Log position of its first entry.
    pub first: u64,
    offsets: Vec<u32>,
    leaves: Vec<Digest>,
    compressed: Vec<u8>,
}

impl Sealed {
    fn new(first: u64, offsets: Vec<u32>, leaves: Vec<Digest>, raw: &[u8]) -> Self {
        Self {
            first,
            offsets,
            leaves,
            compressed: lz4_flex::block::compress(raw),
        }
    }

    /// The leaf hashes of its entries, in order.
    pub fn leaves(&self) -> &[Digest] {
        &self.leaves
    }

    /// The stored value: entry count (u32 LE), raw length (u32 LE), count+1
    /// offsets (u32 LE) into the raw bytes, the chain hash of each entry
    /// (32 bytes each), then the LZ4 block of the raw bytes.
    pub fn into_value(self, hashes: &[Digest]) -> Result<Vec<u8>> {
        debug_assert_eq!(hashes.len(), self.leaves.len());
        let count = u32::try_from(self.leaves.len()).map_err(|_| too_big())?;
        let raw_len = self.offsets.last().copied().unwrap_or(0);
        let mut value = Vec::with_capacity(
            8 + 4 * self.offsets.len() + 32 * hashes.len() + self.compressed.len(),
        );
        value.extend_from_slice(&count.to_le_bytes());
        value.extend_from_slice(&raw_len.to_le_bytes());
        for offset in &self.offsets {
            value.extend_from_slice(&offset.to_le_bytes());
        }
        for hash in hashes {
            value.extend_from_slice(hash.as_bytes());
        }
        value.extend_from_slice(&self.compressed);
        Ok(value)
    }
}

/// Encodes `entries` (at log positions `first_seq..`) into sealed frames, in
/// order, on up to `threads` threads. The calling thread first runs
/// `meanwhile`, then joins in.
///
/// # Errors
/// An entry that cannot be encoded, or a frame beyond 4 GiB.
pub(crate) fn seal<T, R>(
    first_seq: u64,
    entries: &[T],
    threads: usize,
    meanwhile: impl FnOnce() -> R,
) -> (Result<Vec<Sealed>>, R)
where
    T: Serialize + Sync,
{
    let chunks: Vec<&[T]> = entries.chunks(CHUNK).collect();
    let helpers = threads
        .saturating_sub(1)
        .min(chunks.len().saturating_sub(1));
    if helpers == 0 {
        let other = meanwhile();
        return (seal_part(first_seq, entries), other);
    }
    // Chunks are handed out one at a time, so that the calling thread, which
    // starts late, and a thread the OS delays both finish together.
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, Vec<Sealed>)>> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(i) else {
                return Ok(done);
            };
            let at = u64::try_from(i * CHUNK).map_err(|_| too_big())? + first_seq;
            done.push((i, seal_part(at, chunk)?));
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..helpers).map(|_| scope.spawn(work)).collect();
        let other = meanwhile();
        let mut done = Vec::with_capacity(chunks.len());
        let mut failed = None;
        let results = std::iter::once(work()).chain(workers.into_iter().map(|worker| {
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }));
        for result in results {
            match result {
                Ok(sealed) => done.extend(sealed),
                Err(err) => failed = failed.or(Some(err)),
            }
        }
        if let Some(err) = failed {
            return (Err(err), other);
        }
        done.sort_unstable_by_key(|(i, _)| *i);
        (Ok(done.into_iter().flat_map(|(_, s)| s).collect()), other)
    })
}

fn seal_part<T: Serialize>(first_seq: u64, entries: &[T]) -> Result<Vec<Sealed>> {
    let mut frames = Vec::new();
    let mut raw = Vec::with_capacity(FRAME_BYTES + 4096);
    let mut offsets = vec![0u32];
    let mut leaves = Vec::new();
    let mut first = first_seq;
    for (next, entry) in (first_seq..).zip(entries) {
        let mut start = raw.len();
        encode_into(entry, &mut raw).map_err(|source| Error::Decode {
            what: format!("log entry {next}"),
            source,
        })?;
        if start > 0 && raw.len() > FRAME_BYTES {
            // The entry would overfill the frame: the frame ends before it,
            // and it starts the next one. A frame outgrows FRAME_BYTES only
            // when one entry does.
            let spill = raw.split_off(start);
            frames.push(Sealed::new(
                first,
                std::mem::replace(&mut offsets, vec![0]),
                std::mem::take(&mut leaves),
                &raw,
            ));
            raw.clear();
            raw.extend_from_slice(&spill);
            start = 0;
            first = next;
        }
        leaves.push(leaf_hash(&raw[start..]));
        offsets.push(u32::try_from(raw.len()).map_err(|_| too_big())?);
    }
    if !leaves.is_empty() {
        frames.push(Sealed::new(first, offsets, leaves, &raw));
    }
    Ok(frames)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let array: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(array)).ok()
}

/// A stored frame, decompressed.
pub(crate) struct Frame {
    offsets: Vec<usize>,
    hashes: Vec<u8>,
    raw: Vec<u8>,
}

impl Frame {
    /// Reads a stored value; `None` if it is not a well-formed frame (its
    /// header does not add up or its block does not decompress to the length
    /// it declares).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let count = read_u32(value, 0)?;
        let raw_len = read_u32(value, 4)?;
        let hashes_at = count.checked_add(1)?.checked_mul(4)?.checked_add(8)?;
        let block_at = count.checked_mul(32)?.checked_add(hashes_at)?;
        if count == 0 || block_at > value.len() {
            return None;
        }
        let offsets = (0..=count)
            .map(|i| read_u32(value, 8 + 4 * i))
            .collect::<Option<Vec<usize>>>()?;
        let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
        if offsets.first() != Some(&0) || offsets.last() != Some(&raw_len) || !ordered {
            return None;
        }
        let block = &value[block_at..];
        // An LZ4 block expands at most 255-fold: a larger declared length is
        // a damaged header, not a reason to allocate it.
        if raw_len > block.len().saturating_mul(255).saturating_add(16) {
            return None;
        }
        let raw = lz4_flex::block::decompress(block, raw_len).ok()?;
        (raw.len() == raw_len).then(|| Self {
            offsets,
            hashes: value[hashes_at..block_at].to_vec(),
            raw,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Entry `i`: its stored chain hash and its canonical bytes.
    pub fn entry(&self, i: usize) -> Option<(Digest, &[u8])> {
        let hash: [u8; 32] = self.hashes.get(32 * i..32 * (i + 1))?.try_into().ok()?;
        let bytes = self
            .raw
            .get(*self.offsets.get(i)?..*self.offsets.get(i + 1)?)?;
        Some((Digest(hash), bytes))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stored(first_seq: u64, entries: &[Vec<u8>], threads: usize) -> Vec<(u64, Vec<u8>)> {
        let (sealed, ()) = seal(first_seq, entries, threads, || ());
        let mut prev = Digest::default();
        sealed
            .unwrap()
            .into_iter()
            .map(|s| {
                let hashes: Vec<Digest> = s
                    .leaves()
                    .iter()
                    .map(|leaf| {
                        prev = link_hash(&prev, leaf);
                        prev
                    })
                    .collect();
                (s.first, s.into_value(&hashes).unwrap())
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// Frames are a lossless, position-preserving split of the entries,
        /// whatever the thread count, and their hashes are the chain.
        #[test]
        fn frames_round_trip(
            entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 1..200),
            threads in 1usize..4,
        ) {
            let frames = stored(10, &entries, threads);
            let mut next = 10u64;
            let mut prev = Digest::default();
            let mut all = Vec::new();
            for (first, value) in &frames {
                prop_assert_eq!(*first, next);
                let frame = Frame::parse(value).expect("parses");
                // Only a lone entry may make a frame larger than the target,
                // which is what keeps sled's nodes out of blob files.
                prop_assert!(frame.len() == 1 || frame.raw.len() <= FRAME_BYTES);
                for i in 0..frame.len() {
                    let (hash, bytes) = frame.entry(i).unwrap();
                    // Entries are encoded as bincode byte strings: a length
                    // prefix, then the bytes.
                    let decoded: Vec<u8> = backfill_core::decode(bytes).unwrap();
                    prev = chain_hash(&prev, bytes);
                    prop_assert_eq!(hash, prev);
                    all.push(decoded);
                }
                next += u64::try_from(frame.len()).unwrap();
            }
            prop_assert_eq!(all, entries);
        }

        /// Damaged stored bytes are refused or read as other bytes, never a
        /// panic or an allocation the damage asked for.
        #[test]
        fn damaged_frames_never_panic(
            entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..500), 1..40),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let (_, mut value) = stored(0, &entries, 1).remove(0);
            for (at, mask) in flips {
                let i = at.index(value.len());
                value[i] ^= mask;
            }
            if truncate {
                value.truncate(cut.index(value.len()));
            }
            if let Some(frame) = Frame::parse(&value) {
                for i in 0..frame.len() + 1 {
                    let _ = frame.entry(i);
                }
            }
        }
    }
}
