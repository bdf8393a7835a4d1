//! The secrets store's master key: each value is sealed with ChaCha20-Poly1305 under a
//! fresh random nonce, and bound to its owner and path (as associated data) so a
//! ciphertext cannot be moved to another secret.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use super::error::{Result, StoreError};

/// The master key, turned into a cipher once.
pub struct SecretsKey(ChaCha20Poly1305);

/// A sealed secret's nonce.
pub type SealNonce = [u8; 12];

impl SecretsKey {
    pub fn new(key: &[u8; 32]) -> SecretsKey {
        SecretsKey(ChaCha20Poly1305::new(Key::from_slice(key)))
    }

    /// `value` sealed as `client_id`'s secret at `path`: the nonce and the ciphertext.
    pub(super) fn seal(
        &self,
        client_id: &str,
        path: &str,
        value: &str,
    ) -> Result<(SealNonce, Vec<u8>)> {
        let mut nonce = SealNonce::default();
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Database(format!("no randomness: {e}")))?;
        let aad = associated_data(client_id, path);
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Database("cannot encrypt the secret".into()))?;
        Ok((nonce, ciphertext))
    }

    /// The plain bytes of `client_id`'s secret at `path`; `None` when they were sealed
    /// under another key or for another secret.
    pub(super) fn unseal(
        &self,
        client_id: &str,
        path: &str,
        nonce: &SealNonce,
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        let aad = associated_data(client_id, path);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }
}

fn associated_data(client_id: &str, path: &str) -> Vec<u8> {
    [client_id.as_bytes(), b"\0", path.as_bytes()].concat()
}
