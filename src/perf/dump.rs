//! Writing reports to disk: safe file names and atomic writes.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The default report folder, relative to the working directory.
pub const DEFAULT_DUMP_DIR: &str = "./dump/performance";

/// A report could not be written. The earlier file at that path, if any, is intact.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let blocker = dir.path().join("file");
/// std::fs::write(&blocker, "x").unwrap();
/// let err = backtest_perf::dump::write_atomic(&blocker.join("sub"), "r.md", "text").unwrap_err();
/// assert!(matches!(err, backtest_perf::DumpError::CreateFolder { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The folder could not be created. Fix: check the path and its permissions.
    #[error("could not create report folder {}: {source}; check the path and its permissions", path.display())]
    CreateFolder {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file could not be written. Fix: check free space and the folder's permissions.
    #[error("could not write report {}: {source}; check free space and the folder's permissions", path.display())]
    Write {
        /// The file that was to be written.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl DumpError {
    /// The path that could not be written.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let blocker = dir.path().join("file");
    /// std::fs::write(&blocker, "x").unwrap();
    /// let err = backtest_perf::dump::write_atomic(&blocker.join("sub"), "r.md", "text").unwrap_err();
    /// assert_eq!(err.path(), blocker.join("sub"));
    /// ```
    pub fn path(&self) -> &Path {
        match self {
            DumpError::CreateFolder { path, .. } | DumpError::Write { path, .. } => path,
        }
    }
}

const MAX_STEM: usize = 100;

/// A file stem for `name` made of `[A-Za-z0-9._-]` only, never empty, never `.` or `..`
/// or hidden, at most about 120 characters, and one name per file on every file system.
///
/// A name is kept as it is when it is already plain: lower-case letters, digits, `.`,
/// `_` and `-`, not hidden, no `..`, not a name Windows reserves (`con`, `nul`, `com1`,
/// `aux.txt`, ...), not ending in `.`, and not ending like a hashed stem (`-` and 16 hex
/// digits). Any other name gets its unsafe characters replaced by `_` and a hash of the
/// original appended. So two different names never share a file: not `a/b` and a
/// strategy literally named like its stem, and not `Con` and `con` on a file system that
/// ignores case.
///
/// ```
/// use backtest_perf::dump::safe_file_stem;
///
/// assert_eq!(safe_file_stem("my-strategy"), "my-strategy");
/// assert_eq!(safe_file_stem(""), "global");
/// let s = safe_file_stem("../../x");
/// assert!(s.starts_with("______x-"), "{s}");
/// assert!(!s.contains('/') && !s.contains(".."));
/// assert_ne!(safe_file_stem("a/b"), safe_file_stem("a_b"));
/// // A name that looks like another's hashed stem is hashed too.
/// assert_ne!(safe_file_stem(&safe_file_stem("a/b")), safe_file_stem("a/b"));
/// // Windows' reserved names, and names differing only in case, get their own files.
/// assert!(safe_file_stem("con").starts_with("_con-"));
/// assert!(safe_file_stem("aux.txt").starts_with("_aux.txt-"));
/// assert_ne!(safe_file_stem("Con").to_lowercase(), safe_file_stem("con").to_lowercase());
/// ```
pub fn safe_file_stem(name: &str) -> String {
    if name.is_empty() {
        return super::key::GLOBAL.to_string();
    }
    let mut stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while stem.contains("..") {
        stem = stem.replace("..", "__");
    }
    if stem.starts_with('.') {
        stem.replace_range(0..1, "_");
    }
    let plain = stem == name
        && stem.len() <= MAX_STEM
        && !stem.bytes().any(|b| b.is_ascii_uppercase())
        && !stem.ends_with('.')
        && !reserved_on_windows(&stem)
        && !looks_hashed(&stem);
    if plain {
        return stem;
    }
    if reserved_on_windows(&stem) {
        // Windows reserves the name before the first dot whatever follows it.
        stem.insert(0, '_');
    }
    stem.truncate(MAX_STEM);
    format!("{stem}-{:016x}", fnv1a(name.as_bytes()))
}

/// `con`, `prn`, `aux`, `nul`, `com0`-`com9`, `lpt0`-`lpt9`, in any case, alone or before
/// a dot: names Windows will not create a file under.
fn reserved_on_windows(stem: &str) -> bool {
    let base = stem.split('.').next().unwrap_or(stem).to_ascii_lowercase();
    matches!(base.as_str(), "con" | "prn" | "aux" | "nul")
        || (base.len() == 4
            && (base.starts_with("com") || base.starts_with("lpt"))
            && base.as_bytes()[3].is_ascii_digit())
}

/// Ends in `-` and 16 lower-case hex digits, as a hashed stem does.
fn looks_hashed(stem: &str) -> bool {
    let bytes = stem.as_bytes();
    bytes.len() >= 17
        && bytes[bytes.len() - 17] == b'-'
        && bytes[bytes.len() - 16..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// FNV-1a, 64 bits: a stable hash for file names (std's hasher may change between releases).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks that reports can be written into `dir` (creating it) by creating and removing
/// a temporary file there: a command checks its output folder before a long run, not
/// after it.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// backtest_perf::dump::check_writable(&dir.path().join("reports")).unwrap();
/// assert!(dir.path().join("reports").is_dir());
/// let file = dir.path().join("a-file");
/// std::fs::write(&file, "").unwrap();
/// assert!(backtest_perf::dump::check_writable(&file.join("sub")).is_err());
/// ```
pub fn check_writable(dir: &Path) -> Result<(), DumpError> {
    std::fs::create_dir_all(dir).map_err(|source| DumpError::CreateFolder {
        path: dir.to_path_buf(),
        source,
    })?;
    tempfile::Builder::new()
        .prefix(".write-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| DumpError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `text` to `dir/file_name` atomically: a temporary file in `dir`, synced, then
/// renamed over the target. Creates `dir`. Returns the path written.
///
/// `file_name` must be a plain file name (see [`safe_file_stem`]); the result always lies
/// inside `dir`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::dump::write_atomic(dir.path(), "r.md", "hello").unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
/// ```
pub fn write_atomic(dir: &Path, file_name: &str, text: &str) -> Result<PathBuf, DumpError> {
    write_atomic_bytes(dir, file_name, text.as_bytes())
}

/// [`write_atomic`] for bytes (a protobuf file, an image).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::dump::write_atomic_bytes(dir.path(), "p.pb", &[1, 2, 3]).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), [1, 2, 3]);
/// ```
pub fn write_atomic_bytes(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<PathBuf, DumpError> {
    write_atomic_with(dir, file_name, |file| file.write_all(bytes))
}

/// [`write_atomic`] for a file written piece by piece (through a buffer), so that a large
/// report is never held whole in memory. If `write` fails, nothing is left behind.
///
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::dump::write_atomic_with(dir.path(), "n.txt", |w| {
///     (1..=3).try_for_each(|n| write!(w, "{n} "))
/// })
/// .unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "1 2 3 ");
/// let failed = backtest_perf::dump::write_atomic_with(dir.path(), "f.txt", |_| Err(std::io::Error::other("no")));
/// assert!(failed.is_err());
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only n.txt");
/// ```
pub fn write_atomic_with(
    dir: &Path,
    file_name: &str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<PathBuf, DumpError> {
    std::fs::create_dir_all(dir).map_err(|source| DumpError::CreateFolder {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(file_name);
    let write_err = |source| DumpError::Write {
        path: path.clone(),
        source,
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".report-").suffix(".tmp");
    // A report is an ordinary file (the temporary file would otherwise stay private).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let file = builder.tempfile_in(dir).map_err(write_err)?;
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, file);
    write(&mut buffered).map_err(write_err)?;
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.as_file().sync_all().map_err(write_err)?;
    file.persist(&path).map_err(|e| write_err(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_safe(stem: &str) -> bool {
        !stem.is_empty()
            && !stem.starts_with('.')
            && !stem.contains("..")
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    #[test]
    fn unsafe_names_map_to_distinct_safe_stems() {
        let names = [
            "../../x",
            "",
            "a/b",
            "a\\b",
            "стратегия",
            "策略",
            ".",
            "..",
            ".hidden",
            "a b",
            "x".repeat(300).as_str(),
            "/etc/passwd",
            "a\0b",
        ]
        .map(String::from);
        let stems: Vec<String> = names.iter().map(|n| safe_file_stem(n)).collect();
        for (name, stem) in names.iter().zip(&stems) {
            assert!(is_safe(stem), "{name:?} -> {stem:?}");
            assert!(stem.len() <= MAX_STEM + 17, "{stem}");
        }
        let mut unique = stems.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), stems.len(), "{stems:?}");
        assert_eq!(safe_file_stem("a/b"), format!("a_b-{:016x}", fnv1a(b"a/b")));
        assert_eq!(safe_file_stem("v1.2_sma-cross"), "v1.2_sma-cross");
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        write_atomic(&nested, "r.md", "first").unwrap();
        let path = write_atomic(&nested, "r.md", "second").unwrap();
        assert_eq!(path, nested.join("r.md"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let files: Vec<_> = std::fs::read_dir(&nested)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["r.md"]);
    }
}
