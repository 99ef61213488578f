//! For tests that tamper with a journal's files (feature `testing`): the
//! journal's sled database with the journal's own settings, so that it opens
//! the files a journal wrote, and the journal's own key layout, so that a test
//! edits the entry it means to and stays right if the layout changes.

use std::path::Path;

use crate::layout;
use crate::State;

/// The journal's sled database in `path`, opened directly. A lock still held
/// by a database dropped a moment ago is waited for (up to a second).
///
/// # Panics
/// If the directory cannot be opened: this is for tests.
pub fn raw_sled(path: &Path) -> sled::Db {
    for _ in 0..50 {
        if let Ok(db) = crate::store::sled_config(path, crate::SEGMENT_SIZE).open() {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot open {} with sled", path.display())
}

/// The prefix of every log frame's key: scan it for the frames in order.
pub const LOG_PREFIX: &[u8] = &[layout::LOG];

/// The metadata key of the format version (a u32, big-endian).
pub const META_FORMAT: &[u8] = layout::META_FORMAT;

/// The metadata key of the journal id (a uuid's 16 bytes).
pub const META_ID: &[u8] = layout::META_ID;

/// The key of the log frame whose first entry is at position `seq`.
pub fn log_key(seq: u64) -> Vec<u8> {
    layout::log_key(seq)
}

/// The first log position of a frame, from its key; `u64::MAX` if the key is
/// malformed.
pub fn frame_first_seq(key: &[u8]) -> u64 {
    layout::frame_first_seq(key)
}

/// The status page holding `key`, and the key's offset (bit) within it.
pub fn page_of(key: i64) -> (i64, u8) {
    layout::page_of(key)
}

/// The key of a status page.
pub fn page_key(page: i64) -> Vec<u8> {
    layout::page_key(page)
}

/// The key of a page's map of the keys in `state` (a u64, big-endian, with
/// bit `offset` set for each key of the page in that state).
pub fn bitmap_key(state: State, page: i64) -> Vec<u8> {
    layout::bitmap_key(state, page)
}

/// The journal's read accounting (`store::account`): a few more lookups of
/// `key` so that sled's cache bound holds for a single pass (decision 58).
pub fn account(db: &sled::Db, key: &[u8]) {
    crate::store::account(db, key);
}
