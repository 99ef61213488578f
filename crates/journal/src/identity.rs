//! A journal's identity on disk, and opening without trusting the store.
//!
//! Why a marker beside the store: sled, given a directory whose log is
//! missing or whose first bytes are damaged, starts an empty database and
//! writes over the old files. A journal used to be *replaced* that way,
//! silently: a new id, "nothing planned yet", "chain: intact". The marker
//! (`JOURNAL`, written once, atomically, when the journal is created) says "a
//! journal with this id lives here", so an empty or foreign store under it is
//! damage, reported and never adopted.
//!
//! Why a copy: sled writes while it opens (recovery, a new segment). An
//! existing journal is first opened from a copy of its files and checked;
//! only a journal that checks out is opened in place, and read-only commands
//! never open it in place at all, so they leave the files byte for byte as
//! they found them (and can read a journal another process holds).
//!
//! Why creation is atomic: a journal directory is either absent or empty, or
//! complete with its marker. It is built in a sibling directory and renamed
//! into place, so a crash while creating leaves no half-journal to misread.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::{Error, Result};

/// The marker's file name.
pub const MARKER: &str = "JOURNAL";

const MARKER_HEADER: &str = "backfill journal";

/// What a directory holds.
pub(crate) enum Found {
    /// Nothing: absent, or an empty directory.
    Nothing,
    /// A journal's marker, with its id.
    Journal(Uuid),
    /// sled's files without a marker (an older format, or a deleted marker).
    Unmarked,
    /// Files that are not a journal's.
    Other(String),
}

fn io_error(path: &Path, what: &str, err: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        what: what.to_owned(),
        source: err,
    }
}

/// Looks at `path` without changing it.
pub(crate) fn inspect(path: &Path) -> Result<Found> {
    if !path.exists() {
        return Ok(Found::Nothing);
    }
    if !path.is_dir() {
        return Ok(Found::Other("it is a file, not a directory".into()));
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| io_error(path, "listing", e))? {
        let entry = entry.map_err(|e| io_error(path, "listing", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names.iter().any(|n| n == MARKER) {
        return read_marker(path).map(Found::Journal);
    }
    let sled = |n: &str| {
        n == "db" || n == "conf" || n == "blobs" || n.starts_with("snap.") || n.starts_with(HEAD)
    };
    match names.iter().find(|n| !sled(n)) {
        Some(other) => Ok(Found::Other(format!("it holds {other:?}"))),
        None if names.is_empty() => Ok(Found::Nothing),
        None => Ok(Found::Unmarked),
    }
}

fn read_marker(path: &Path) -> Result<Uuid> {
    let file = path.join(MARKER);
    let bytes = fs::read(&file).map_err(|e| io_error(&file, "reading", e))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let id = (lines.next() == Some(MARKER_HEADER))
        .then(|| lines.next())
        .flatten()
        .and_then(|l| l.strip_prefix("id "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok());
    id.ok_or_else(|| Error::Damaged {
        path: path.to_path_buf(),
        problem: format!("the identity marker {MARKER} does not read as a journal's"),
    })
}

/// Writes the marker for journal `id` into `dir` (durably).
pub(crate) fn write_marker(dir: &Path, id: Uuid) -> Result<()> {
    let file = dir.join(MARKER);
    let mut out = fs::File::create(&file).map_err(|e| io_error(&file, "creating", e))?;
    writeln!(out, "{MARKER_HEADER}\nid {id}\n").map_err(|e| io_error(&file, "writing", e))?;
    out.sync_all().map_err(|e| io_error(&file, "syncing", e))?;
    Ok(())
}

/// Restricts a journal's directory to its owner: it holds source data.
pub(crate) fn restrict(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(dir, "restricting", e))?;
        for entry in fs::read_dir(dir).map_err(|e| io_error(dir, "listing", e))? {
            let entry = entry.map_err(|e| io_error(dir, "listing", e))?;
            let mode = if entry.path().is_dir() { 0o700 } else { 0o600 };
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))
                .map_err(|e| io_error(&entry.path(), "restricting", e))?;
        }
    }
    Ok(())
}

/// A sibling of `path` to build a new journal in.
pub(crate) fn staging_dir(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".{name}.creating-{}", Uuid::new_v4().simple()));
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&staging)
        .map_err(|e| io_error(&staging, "creating", e))?;
    Ok(staging)
}

/// Moves a finished staging directory to `path` (absent or empty), then
/// makes the move durable.
pub(crate) fn install(staging: &Path, path: &Path) -> Result<()> {
    if path.exists() {
        // An empty directory: rename(2) replaces it atomically.
        fs::remove_dir(path).map_err(|e| io_error(path, "replacing the empty directory", e))?;
    }
    fs::rename(staging, path).map_err(|e| io_error(path, "moving the new journal into", e))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = fs::File::open(parent) {
            dir.sync_all().ok();
        }
    }
    Ok(())
}

/// Copies a journal's files into a new temporary directory.
pub(crate) fn copy(path: &Path) -> Result<tempfile::TempDir> {
    let copy = tempfile::Builder::new()
        .prefix("backfill-journal-copy-")
        .tempdir()
        .map_err(|e| io_error(path, "making a temporary copy of", e))?;
    copy_dir(path, copy.path())?;
    Ok(copy)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).map_err(|e| io_error(from, "listing", e))? {
        let entry = entry.map_err(|e| io_error(from, "listing", e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            fs::create_dir(&target).map_err(|e| io_error(&target, "creating", e))?;
            copy_dir(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(|e| io_error(&source, "copying", e))?;
        }
    }
    Ok(())
}

/// The head file's name: the chain head after the last commit.
pub const HEAD: &str = "HEAD";

/// Records the chain head after a flushed commit. Not synced: it may lag
/// after a crash (never lead: it is written after the store's flush), so a
/// head file *ahead* of the store means the store lost committed entries.
pub(crate) fn write_head(dir: &Path, entries: u64, head: &backfill_core::Digest) -> Result<()> {
    let file = dir.join(HEAD);
    let staging = dir.join("HEAD.new");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&staging)
        .and_then(|mut f| write!(f, "entries {entries}\nhead {head}\n"))
        .map_err(|e| io_error(&staging, "writing", e))?;
    fs::rename(&staging, &file).map_err(|e| io_error(&file, "replacing", e))
}

/// The recorded head, if the file is there and reads (a missing or torn
/// head file says nothing).
pub(crate) fn read_head(dir: &Path) -> Option<(u64, String)> {
    let text = fs::read_to_string(dir.join(HEAD)).ok()?;
    let mut lines = text.lines();
    let entries = lines
        .next()?
        .strip_prefix("entries ")?
        .trim()
        .parse()
        .ok()?;
    let head = lines.next()?.strip_prefix("head ")?.trim().to_owned();
    Some((entries, head))
}
