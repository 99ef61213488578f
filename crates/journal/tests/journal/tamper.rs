//! Edits to the stored log are found and named by position.

use backfill_journal::testing::{bitmap_key, log_key, page_of};
use backfill_journal::{Batch, ChainProblem, Error, Journal, State};

use crate::support::event;

fn journal_with_entries(dir: &std::path::Path, n: i64) {
    let journal = Journal::open(dir).unwrap();
    for key in 0..n {
        let mut batch = Batch::new();
        batch.plan(event(key, 0));
        journal.commit(batch).unwrap();
    }
    journal.verify_chain().unwrap();
}

fn edit(dir: &std::path::Path, f: impl FnOnce(&sled::Db)) {
    let db = crate::support::raw_sled(dir);
    f(&db);
    db.flush().unwrap();
}

fn broken_at(dir: &std::path::Path) -> (u64, ChainProblem) {
    let journal = Journal::open(dir).unwrap();
    match journal.verify_chain() {
        Err(Error::ChainBroken { position, problem }) => (position, problem),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_is_named_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_entries(dir.path(), 6);
    for byte in [5usize, 40, 200] {
        let dir2 = tempfile::tempdir().unwrap();
        journal_with_entries(dir2.path(), 6);
        edit(dir2.path(), |db| {
            let mut value = db.get(log_key(3)).unwrap().unwrap().to_vec();
            let at = byte.min(value.len() - 1);
            value[at] ^= 0x01;
            db.insert(log_key(3), value).unwrap();
        });
        let (position, problem) = broken_at(dir2.path());
        assert_eq!(position, 3, "byte {byte}");
        assert!(
            matches!(
                problem,
                ChainProblem::HashMismatch | ChainProblem::Undecodable
            ),
            "byte {byte}: {problem:?}"
        );
    }
}

#[test]
fn a_deleted_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_entries(dir.path(), 6);
    edit(dir.path(), |db| {
        db.remove(log_key(2)).unwrap();
    });
    assert_eq!(broken_at(dir.path()), (2, ChainProblem::Missing));
}

#[test]
fn a_truncated_log_is_named() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_entries(dir.path(), 6);
    edit(dir.path(), |db| {
        db.remove(log_key(5)).unwrap();
        db.remove(log_key(4)).unwrap();
    });
    assert_eq!(
        broken_at(dir.path()),
        (
            4,
            ChainProblem::Truncated {
                expected_entries: 6
            }
        )
    );
}

#[test]
fn reordered_entries_are_named() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_entries(dir.path(), 6);
    edit(dir.path(), |db| {
        let a = db.get(log_key(1)).unwrap().unwrap();
        let b = db.get(log_key(2)).unwrap().unwrap();
        db.insert(log_key(1), b).unwrap();
        db.insert(log_key(2), a).unwrap();
    });
    assert_eq!(
        broken_at(dir.path()),
        (1, ChainProblem::WrongPosition { claimed: 2 })
    );
}

#[test]
fn an_edited_index_is_caught_by_verify_index() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_entries(dir.path(), 3);
    edit(dir.path(), |db| {
        // Make key 1 (page 0, bit 1) look applied in the keys-by-state bitmaps.
        let (page, offset) = page_of(1);
        db.insert(
            bitmap_key(State::Applied, page),
            &(1u64 << offset).to_be_bytes(),
        )
        .unwrap();
    });
    let journal = Journal::open(dir.path()).unwrap();
    journal.verify_chain().unwrap();
    let err = journal.verify_index().unwrap_err();
    assert!(
        matches!(err, Error::IndexMismatch { key: 1, .. }),
        "{err:?}"
    );
}
