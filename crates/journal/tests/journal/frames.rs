//! The stored form of the log: the pinned chain hash, frames that span many
//! entries, and sled never falling back to its unsynced blob files.

use backfill_core::testing::GroupBuilder;
use backfill_core::{plan, Digest, Json, MigrationEvent};
use backfill_journal::testing;
use backfill_journal::{chain_hash, Batch, ChainProblem, Error, Journal, LEAF_DOMAIN, LINK_DOMAIN};
use rand::{Rng, SeedableRng};

use crate::support::realistic_event;

fn derive(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(domain);
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// The chain is part of the journal format: an accidental change must fail
/// here, not silently make every existing journal unverifiable.
#[test]
fn the_chain_hash_is_pinned_and_is_link_of_leaf() {
    let first = chain_hash(&Digest::default(), b"backfill journal entry");
    let second = chain_hash(&first, b"the next entry");
    // As documented: link(prev, leaf(entry)), both blake3 derive-key.
    let leaf = derive(LEAF_DOMAIN, &[b"backfill journal entry"]);
    assert_eq!(first.0, derive(LINK_DOMAIN, &[&[0u8; 32], &leaf]));
    assert_eq!(
        first.to_hex(),
        "ed0f3449bb2b76b865306bf0853a6404cea0bb6f2ba28de9232e7c8ae7973d41"
    );
    assert_eq!(
        second.to_hex(),
        "0bf7085914d5816e03741b914012a2210acec3ed0e2ca3b4105aa43b27f3d6c4"
    );
}

fn log_frames(dir: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let db = crate::support::raw_sled(dir);
    db.scan_prefix(testing::LOG_PREFIX)
        .map(|item| {
            let (k, v) = item.unwrap();
            (testing::frame_first_seq(&k), v.to_vec())
        })
        .collect()
}

#[test]
fn a_large_commit_spans_frames_and_every_entry_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<MigrationEvent> = (0..400).map(realistic_event).collect();
    {
        let journal = Journal::open(dir.path()).unwrap();
        let mut batch = Batch::new();
        for event in &events {
            batch.plan(event.clone());
        }
        journal.commit(batch).unwrap();
    }
    let frames = log_frames(dir.path());
    assert!(frames.len() > 2, "{} frames", frames.len());
    assert_eq!(frames[0].0, 0);
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.verify_chain().unwrap().entries, 400);
    // A walk that may be stopped gives the same report, or none once stopped
    // (verify stops it when it gives up on the rest of an audit).
    use std::sync::atomic::AtomicBool;
    let whole = journal.verify_chain_until(&AtomicBool::new(false)).unwrap();
    assert_eq!(whole.map(|r| (r.entries, r.head)), {
        let r = journal.verify_chain().unwrap();
        Some((r.entries, r.head))
    });
    assert!(journal
        .verify_chain_until(&AtomicBool::new(true))
        .unwrap()
        .is_none());
    // Out of order, so that lookups both hit and miss the last frame read.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let key = rng.gen_range(0..400);
        assert_eq!(
            journal.event(key).unwrap().as_ref(),
            Some(&events[usize::try_from(key).unwrap()])
        );
    }
}

#[test]
fn a_byte_flipped_inside_a_frame_is_named_within_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    {
        let journal = Journal::open(dir.path()).unwrap();
        let mut batch = Batch::new();
        for key in 0..400 {
            batch.plan(realistic_event(key));
        }
        journal.commit(batch).unwrap();
    }
    let frames = log_frames(dir.path());
    let (first, value) = &frames[1];
    let end = frames[2].0;
    for at in [value.len() / 2, value.len() - 5, 9, 40] {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
            }
        }
        {
            let db = crate::support::raw_sled(copy.path());
            let mut edited = value.clone();
            edited[at] ^= 0x10;
            db.insert(testing::log_key(*first), edited).unwrap();
            db.flush().unwrap();
        }
        let journal = Journal::open(copy.path()).unwrap();
        match journal.verify_chain() {
            Err(Error::ChainBroken { position, problem }) => {
                assert!(
                    (*first..end).contains(&position),
                    "byte {at}: position {position} outside frame {first}..{end}"
                );
                assert!(
                    matches!(
                        problem,
                        ChainProblem::HashMismatch | ChainProblem::Undecodable
                    ),
                    "byte {at}: {problem:?}"
                );
            }
            other => panic!("byte {at}: expected a broken chain, got {other:?}"),
        }
    }
}

/// Regression: with whole commits stored as one value, sled 0.34 wrote the
/// log to blob files, which it never fsyncs. Realistic batches and batches of
/// events that do not compress must both stay inside sled's own log.
#[test]
fn sled_never_falls_back_to_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Random hex for LZ4 to find nothing in; each event takes its own slice.
    let pool: String = (0..1 << 20)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
        .collect();
    let mut key = 0;
    for round in 0..30 {
        let mut batch = Batch::new();
        for _ in 0..500 {
            let event = if round % 2 == 1 {
                let at = rng.gen_range(0..pool.len() - 1500);
                let noise = &pool[at..at + 1500];
                let group = GroupBuilder::new(key)
                    .competitor("Acme", Some("1.5"))
                    .brand(|r| r.metadata = Some(Json(format!("\"{noise}\""))))
                    .build();
                plan(key, &group.rows, &group.directories).unwrap()
            } else {
                realistic_event(key)
            };
            batch.plan(event);
            key += 1;
        }
        journal.commit(batch).unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "sled wrote {blobs} blob files");
    assert_eq!(journal.verify_chain().unwrap().entries, 15_000);
}

#[test]
fn regression_an_event_too_large_to_store_durably_is_refused_naming_its_key() {
    // 3 MB of incompressible metadata went into a sled blob file, which sled
    // never fsyncs.
    use backfill_core::testing::GroupBuilder;
    use rand::RngCore;
    let mut noise = vec![0u8; 3 << 20];
    rand::thread_rng().fill_bytes(&mut noise);
    let hex: String = noise.iter().map(|b| format!("{b:02x}")).collect();
    let group = GroupBuilder::new(77)
        .brand(|r| r.metadata = Some(backfill_core::Json(format!("{{\"blob\": \"{hex}\"}}"))))
        .build();
    let event = backfill_core::plan(77, &group.rows, &group.directories).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let before = journal.entries();
    let mut batch = Batch::new();
    batch.plan(crate::support::realistic_event(1)).plan(event);
    let err = journal.commit(batch).unwrap_err();
    assert!(
        matches!(
            err,
            backfill_journal::Error::EntryTooLarge { key: Some(77), .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("collector_result_id 77"), "{err}");
    assert_eq!(
        journal.entries(),
        before,
        "nothing of the batch was written"
    );
    drop(journal);
    let blobs = dir.path().join("blobs");
    let blob_files = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(blob_files, 0, "nothing went to sled's unsynced blob files");
}
