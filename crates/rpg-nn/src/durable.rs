//! The one way this project writes a file: whole, under a unique temporary
//! name beside it (created exclusively, so it can never be an existing
//! file, an input included), synced, renamed over the target, and the
//! directory synced. A crash leaves the old file or the whole new one; a
//! failure, or a write that is dropped unfinished, leaves nothing behind.
//! Every writer of every crate above this one uses it.

use std::io;
use std::path::{Path, PathBuf};

/// A file being written beside `target`; removed on drop unless installed.
#[derive(Debug)]
pub struct PendingFile {
    tmp: tempfile::TempPath,
    target: PathBuf,
}

impl PendingFile {
    /// A fresh, empty temporary file beside `target`, ending as `target`
    /// does (image writers choose the format by the extension).
    pub fn beside(target: &Path) -> io::Result<Self> {
        let dir = parent(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let extension = target
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let (prefix, suffix) = (format!(".{name}."), format!(".tmp{extension}"));
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix);
        // Created with the process's umask like any file the user makes
        // (tempfile's default is private 0600): runs are shared.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let file = builder.tempfile_in(dir)?;
        Ok(Self {
            tmp: file.into_temp_path(),
            target: target.to_path_buf(),
        })
    }

    /// Where to write the contents.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the written file, renames it over the target and syncs the
    /// directory.
    pub fn install(self) -> io::Result<()> {
        sync_path(&self.tmp)?;
        self.tmp.persist(&self.target).map_err(|e| e.error)?;
        sync_path(parent(&self.target))
    }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory: give the path of a file to write",
        ));
    }
    let pending = PendingFile::beside(path)?;
    std::fs::write(pending.path(), bytes)?;
    pending.install()
}

/// Flushes a file's contents, or a directory's entries (a rename into
/// it), to the disk.
pub fn sync_path(path: &Path) -> io::Result<()> {
    // Opening a directory for reading and syncing it is how POSIX makes
    // its entries durable; other systems have no such handle, so skip.
    if path.is_dir() && !cfg!(unix) {
        return Ok(());
    }
    std::fs::File::open(path).and_then(|f| f.sync_all())
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_temporary_name_never_is_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        // An input named as older code named its temporary files.
        let input = dir.path().join("x.safetensors.tmp");
        std::fs::write(&input, b"input").unwrap();
        write_atomic(&path, b"out").unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), b"input");
        let pending = PendingFile::beside(&path).unwrap();
        assert!(
            pending
                .path()
                .to_string_lossy()
                .ends_with(".tmp.safetensors")
        );
        assert_ne!(pending.path(), input);
    }

    #[test]
    fn an_unfinished_or_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pending = PendingFile::beside(&dir.path().join("never.json")).unwrap();
        std::fs::write(pending.path(), b"half").unwrap();
        drop(pending);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(write_atomic(dir.path(), b"x").is_err());
        let missing = dir.path().join("no/such/dir/x.json");
        assert!(write_atomic(&missing, b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn files_get_the_umask_permissions_not_private_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.json");
        write_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // SAFETY: umask only reads and restores the process's mask.
        let umask = unsafe {
            let m = libc::umask(0);
            libc::umask(m);
            m
        };
        assert_eq!(mode, 0o666 & !(umask as u32));
    }
}
