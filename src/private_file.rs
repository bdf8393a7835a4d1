//! Files only their owner may read (keys, tokens), written in one step: the content goes
//! to a private temporary file in the same directory, is synced, and is renamed over the
//! old file, so a crash or a full disk leaves the old file or the new one, never a mix,
//! and a reader never sees a half-written file. Also directories only their owner may
//! read (the server's data dir).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `content` to `path` (mode 0600), replacing whatever was there.
pub fn replace(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".tf-")
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(content)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|failed| failed.error)?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// Creates a directory (and its parents) readable by the server's user only: a data dir,
/// or a copy of one, holds secret hashes and keys.
pub fn create_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_replaced_file_is_private_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        replace(&path, b"new").unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(after.mode() & 0o777, 0o600);
        assert_ne!(after.ino(), before, "renamed into place, not rewritten");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
