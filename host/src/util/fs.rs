//! Private files, and the data directory: it holds the database (plugins'
//! secrets among its rows), the admin token and the cache key, so nobody
//! but the host's own user may read any of it.
//!
//! The process runs with umask 077 ([`restrict_umask`], first thing in
//! `main`), so everything it creates is private; [`prepare_data_dir`] creates the
//! directory 0700, and makes an existing one private again (0700 for
//! directories, 0600 for files) with a warning, for installs made before.

use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path`, readable and writable by the owner only. A
/// file that could not be written whole (a full disk) is removed, so that
/// nothing half-written is read at the next start.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        drop(f);
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Replaces `path` with `bytes` (owner-only) through a temporary file of
/// this process's beside it, so that a reader never sees half a file.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Creates `dir` and its parents, mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Files and directories the process creates are its user's alone.
pub fn restrict_umask() {
    // SAFETY: umask only changes the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (mode 0700) or makes an existing one and everything in it
/// private. Returns the paths that were readable by others, already fixed.
pub fn prepare_data_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !dir.exists() {
        create_private_dir(dir)?;
        return Ok(Vec::new());
    }
    let mut fixed = Vec::new();
    make_private(dir, &mut fixed)?;
    if !fixed.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            count = fixed.len(),
            first = %fixed[0].display(),
            "the data directory was readable by other users; made it private (directories 0700, files 0600)"
        );
    }
    Ok(fixed)
}

fn make_private(path: &Path, fixed: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        // Not followed: a link's target is not the data directory's to change.
        return Ok(());
    }
    let want = if meta.is_dir() { 0o700 } else { 0o600 };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & want))?;
        fixed.push(path.to_path_buf());
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            make_private(&entry?.path(), fixed)?;
        }
    }
    Ok(())
}

/// The SHA-256 of the file at `path`, in hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    Ok(crate::util::ids::sha256_hex(&std::fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_data_directory_is_made_private_and_a_new_one_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.join("cache")).unwrap();
        std::fs::write(dir.join("cache/x.cwasm"), b"x").unwrap();
        std::fs::write(dir.join("wasmgate.redb"), b"x").unwrap();
        std::fs::set_permissions(
            dir.join("wasmgate.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.join("cache/x.cwasm"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let fixed = prepare_data_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("wasmgate.redb")), 0o600);
        assert_eq!(mode(&dir.join("cache/x.cwasm")), 0o600);
        assert!(fixed.contains(&dir.join("wasmgate.redb")));
        assert!(
            !fixed.contains(&dir.join("cache/x.cwasm")),
            "already private"
        );

        let fresh = tmp.path().join("a/b/data");
        assert!(prepare_data_dir(&fresh).unwrap().is_empty());
        assert_eq!(mode(&fresh), 0o700);
    }
}
