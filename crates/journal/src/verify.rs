//! Proofs an auditor can run on a journal: the log is the chain its head
//! describes, and the index is the fold of the log.
//!
//! Why two proofs: the log is the history and the index is a cache of its
//! fold that every lookup and count trusts. `verify_chain` shows the log was
//! not edited, removed from, inserted into, reordered or truncated (short of
//! someone recomputing the chain and head), and `verify_index` shows the cache
//! says what the log says. Why name the first bad position: an operator who
//! finds a journal damaged needs to know where, not only that, and the chain
//! breaks exactly at the first changed entry (docs/journal.md).

use std::collections::BTreeMap;
use std::fmt;

use backfill_core::{decode, Digest};

use crate::frame::{self, Frame};
use crate::index::Counts;
use crate::journal::{decode_as, Journal};
use crate::layout::{frame_first_seq, LOG};
use crate::log::{Body, Entry};
use crate::record::{fold, KeyStatus, State};
use crate::{Error, Result};

/// Result of [`Journal::verify_chain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked.
    pub entries: u64,
    /// Hash of the last entry (the chain head).
    pub head: Digest,
}

/// Result of [`Journal::verify_index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexReport {
    /// Keys checked.
    pub keys: u64,
}

/// What is wrong at the first bad log position.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// The entry's bytes, chained to the previous entry's hash, do not hash
    /// to the hash stored with it (edited, or an entry before it replaced).
    HashMismatch,
    /// The entry does not decode although its hash matches (written by
    /// something else than this journal).
    Undecodable,
    /// The entry's stored position is not where it stands.
    WrongPosition {
        /// The position the entry claims.
        claimed: u64,
    },
    /// An entry is missing before the head (deleted).
    Missing,
    /// The log ends before the recorded head (truncated), or the head does not
    /// match the last entry.
    Truncated {
        /// Entries the head says there are.
        expected_entries: u64,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashMismatch => f.write_str(
                "the entry, chained to the one before it, does not hash to its stored hash (edited)",
            ),
            Self::Undecodable => f.write_str("the entry does not decode"),
            Self::WrongPosition { claimed } => write!(f, "the entry claims position {claimed}"),
            Self::Missing => f.write_str("the entry is missing (deleted)"),
            Self::Truncated { expected_entries } => write!(
                f,
                "the log ends here but the head records {expected_entries} entries (truncated)"
            ),
        }
    }
}

impl Journal {
    /// Walks the log and proves it is the chain the head describes: every
    /// entry decodes, stands at the position it claims, carries the previous
    /// entry's hash, and the last one hashes to the recorded head.
    ///
    /// # Errors
    /// [`Error::ChainBroken`] with the first bad position.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        match self.walk_chain(None)? {
            Some(report) => Ok(report),
            None => unreachable!("a walk without a stop flag runs to its end"),
        }
    }

    /// [`Journal::verify_chain`], ending early (`None`) once `stop` is set:
    /// checked before each frame, so a caller that gave up on the rest of
    /// an audit does not wait for the whole log to be hashed.
    ///
    /// # Errors
    /// As [`Journal::verify_chain`], for the part walked.
    pub fn verify_chain_until(
        &self,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<ChainReport>> {
        self.walk_chain(Some(stop))
    }

    fn walk_chain(
        &self,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Option<ChainReport>> {
        let (expected_entries, expected_head) = {
            let inner = self.inner();
            (inner.next_seq, inner.head)
        };
        let mut prev = Digest::default();
        let mut position = 0u64;
        for item in self.db.scan_prefix([LOG]) {
            if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
                return Ok(None);
            }
            let (k, value) = item?;
            crate::store::account(&self.db, &k);
            if frame_first_seq(&k) != position {
                return Err(Error::ChainBroken {
                    position,
                    problem: ChainProblem::Missing,
                });
            }
            let undecodable = |position| Error::ChainBroken {
                position,
                problem: ChainProblem::Undecodable,
            };
            let frame = Frame::parse(&value).ok_or_else(|| undecodable(position))?;
            for i in 0..frame.len() {
                let broken = |problem| Error::ChainBroken { position, problem };
                let (stored, bytes) = frame.entry(i).ok_or_else(|| undecodable(position))?;
                let hash = frame::chain_hash(&prev, bytes);
                let entry: Option<Entry> = decode(bytes).ok();
                let claimed = entry.as_ref().map(|e| e.seq);
                if let Some(claimed) = claimed.filter(|c| *c != position) {
                    return Err(broken(ChainProblem::WrongPosition { claimed }));
                }
                if stored != hash {
                    return Err(broken(ChainProblem::HashMismatch));
                }
                if entry.is_none() {
                    return Err(broken(ChainProblem::Undecodable));
                }
                prev = hash;
                position += 1;
            }
        }
        if position != expected_entries || prev != expected_head {
            return Err(Error::ChainBroken {
                position,
                problem: ChainProblem::Truncated { expected_entries },
            });
        }
        Ok(Some(ChainReport {
            entries: position,
            head: prev,
        }))
    }

    /// Replays the whole log through [`fold`] and proves the stored index
    /// (statuses, keys-by-state, counts) equals it.
    ///
    /// # Errors
    /// [`Error::IndexMismatch`] naming the first key that differs.
    pub fn verify_index(&self) -> Result<IndexReport> {
        let mut folded: BTreeMap<i64, KeyStatus> = BTreeMap::new();
        for item in self.db.scan_prefix([LOG]) {
            let (k, value) = item?;
            crate::store::account(&self.db, &k);
            let first = frame_first_seq(&k);
            let frame = Frame::parse(&value).ok_or_else(|| Error::Damaged {
                path: self.path.clone(),
                problem: format!("the log frame at position {first} does not decompress"),
            })?;
            for i in 0..frame.len() {
                let Some((_, bytes)) = frame.entry(i) else {
                    continue;
                };
                let entry: Entry = decode_as(|| "log entry".into(), bytes)?;
                if let Body::Key { key, record } = entry.body {
                    let next = fold(key, folded.get(&key), entry.seq, &record)?;
                    folded.insert(key, next);
                }
            }
        }
        let mismatch = |key, problem: &str| Error::IndexMismatch {
            key,
            problem: problem.to_owned(),
        };
        let mut stored = 0u64;
        let mut remaining = folded.clone();
        for item in self.keys() {
            let (key, status) = item?;
            stored += 1;
            match remaining.remove(&key) {
                Some(expected) if expected == status => {}
                Some(_) => return Err(mismatch(key, "stored status differs from the fold")),
                None => {
                    return Err(mismatch(
                        key,
                        "status stored for a key the log never mentions",
                    ))
                }
            }
        }
        if let Some(key) = remaining.keys().next() {
            return Err(mismatch(*key, "no stored status"));
        }
        for state in State::ALL {
            let mut expected = folded
                .iter()
                .filter(|(_, s)| s.state == state)
                .map(|(k, _)| *k);
            for key in self.keys_in_state(state, None) {
                let key = key?;
                if expected.next() != Some(key) {
                    return Err(mismatch(key, "keys-by-state index differs from the fold"));
                }
            }
            if let Some(key) = expected.next() {
                return Err(mismatch(key, "missing from the keys-by-state index"));
            }
        }
        let mut expected_counts = Counts::new();
        for status in folded.values() {
            *expected_counts.entry(status.bucket()).or_insert(0) += 1;
        }
        if expected_counts != self.counts() {
            let key = folded.keys().next().copied().unwrap_or_default();
            return Err(mismatch(key, "counts differ from the fold"));
        }
        Ok(IndexReport { keys: stored })
    }
}
