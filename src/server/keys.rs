//! The server's keys: the JWT signing key and the secrets master key. Each comes from the
//! configuration or, by default, from a file in the data dir created (mode 0600) with
//! random bytes on first start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Keys shorter than this are refused: an empty or truncated key file would let anyone
/// sign tokens.
const MIN_KEY_BYTES: usize = 32;

/// Reads a key file, creating it with `length` random bytes if it does not exist.
pub fn load_or_create(path: &Path, length: usize) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) => {
            if key.len() < MIN_KEY_BYTES {
                anyhow::bail!(
                    "{} holds {} bytes; a key needs at least {MIN_KEY_BYTES}",
                    path.display(),
                    key.len()
                );
            }
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
            // Written aside and renamed: a crash never leaves a short key behind.
            crate::private_file::replace(path, &key)
                .with_context(|| format!("cannot create key file {}", path.display()))?;
            tracing::info!("created key file {}", path.display());
            Ok(key)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read key file {}", path.display()))
        }
    }
}

/// `length` random letters and digits, each equally likely.
pub fn random_alphanumeric(length: usize) -> Result<String, getrandom::Error> {
    alphanumeric(length, |pool| getrandom::fill(pool))
}

/// `length` letters and digits worked out from `key` and `input` (HMAC-SHA256 in counter
/// mode): the same for the same key and input, and unpredictable without the key.
pub fn derived_alphanumeric(key: &[u8], input: &[u8], length: usize) -> String {
    use hmac::{Hmac, Mac};
    let mut block = 0u32;
    let derived = alphanumeric(length, |pool| {
        for half in pool.chunks_mut(32) {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(&block.to_be_bytes());
            mac.update(input);
            half.copy_from_slice(&mac.finalize().into_bytes());
            block += 1;
        }
        Ok::<(), std::convert::Infallible>(())
    });
    derived.unwrap_or_else(|never| match never {})
}

/// `length` letters and digits from the bytes `fill` puts in a pool, each equally likely
/// when the bytes are.
fn alphanumeric<E>(
    length: usize,
    mut fill: impl FnMut(&mut [u8; 64]) -> Result<(), E>,
) -> Result<String, E> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut text = String::with_capacity(length);
    let mut pool = [0u8; 64];
    while text.len() < length {
        fill(&mut pool)?;
        // 248 = 4 × 62: larger bytes are dropped, so no character is favoured.
        for byte in pool.iter().filter(|b| **b < 248).take(length - text.len()) {
            text.push(char::from(ALPHABET[usize::from(*byte) % 62]));
        }
    }
    Ok(text)
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
