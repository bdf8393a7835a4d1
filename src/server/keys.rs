//! The server's keys: the JWT signing key and the secrets master key. Each comes from the
//! configuration or, by default, from a file in the data dir created (mode 0600) with
//! random bytes on first start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Reads a key file, creating it with `length` random bytes if it does not exist.
pub fn load_or_create(path: &Path, length: usize) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; length];
            getrandom::fill(&mut key)
                .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create key file {}", path.display()))?;
            file.write_all(&key)?;
            file.sync_all()?;
            tracing::info!("created key file {}", path.display());
            Ok(key)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read key file {}", path.display()))
        }
    }
}

/// A 32-byte key from a file: raw bytes, or base64 text of them.
pub fn thirty_two_bytes(key: &[u8], path: &Path) -> anyhow::Result<[u8; 32]> {
    use base64::Engine;
    if let Ok(raw) = <[u8; 32]>::try_from(key) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(key).unwrap_or_default().trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .with_context(|| format!("{} must hold 32 bytes (raw or base64)", path.display()))
}
