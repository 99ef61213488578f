//! For tests that tamper with a journal's files (feature `testing`): the
//! journal's sled database with the journal's own settings, so that it opens
//! the files a journal wrote.

use std::path::Path;

/// The journal's sled database in `path`, opened directly. A lock still held
/// by a database dropped a moment ago is waited for (up to a second).
///
/// # Panics
/// If the directory cannot be opened: this is for tests.
pub fn raw_sled(path: &Path) -> sled::Db {
    for _ in 0..50 {
        if let Ok(db) = crate::journal::sled_config(path, crate::SEGMENT_SIZE).open() {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot open {} with sled", path.display())
}
