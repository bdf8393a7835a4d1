//! Secrets of API clients: sealed here under the server's master key, stored sealed.

use crate::store::backend::{SealedSecret, Secrets as _};
use crate::store::error::{Result, StoreError};
use crate::store::open::{on_backend, Store};
use crate::store::secrets::Expiry;
use crate::store::secrets_key::{SealNonce, SecretsKey};

impl Store {
    fn secrets_key(&self) -> Result<&SecretsKey> {
        self.secrets
            .as_ref()
            .ok_or_else(|| StoreError::Database("No secrets store".into()))
    }

    pub fn has_secrets_store(&self) -> bool {
        self.secrets.is_some()
    }

    /// Stores (or replaces) a secret.
    pub async fn put_secret(
        &self,
        client_id: &str,
        path: &str,
        value: &str,
        expiry: Expiry,
    ) -> Result<()> {
        let (nonce, ciphertext) = self.secrets_key()?.seal(client_id, path, value)?;
        let sealed = SealedSecret {
            nonce: nonce.to_vec(),
            ciphertext,
        };
        on_backend!(self, db => db.put_secret(client_id, path, sealed, expiry).await)
    }

    pub async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()> {
        on_backend!(self, db => db.delete_secret(client_id, path).await)
    }

    /// The paths among `paths` that `client_id` has no readable secret at.
    pub async fn missing_secrets(
        &self,
        client_id: &str,
        paths: Vec<String>,
    ) -> Result<Vec<String>> {
        on_backend!(self, db => db.missing_secrets(client_id, paths).await)
    }

    /// Reads a secret for a job's agent; a single-use secret is deleted by this read.
    /// `None` when it is missing, expired or cannot be decrypted.
    pub async fn take_secret(&self, client_id: &str, path: &str) -> Result<Option<String>> {
        let sealed = on_backend!(self, db => db.take_secret(client_id, path).await)?;
        let Some(SealedSecret { nonce, ciphertext }) = sealed else {
            return Ok(None);
        };
        let Ok(nonce) = SealNonce::try_from(nonce) else {
            return Ok(None); // a damaged row: unreadable, like one sealed under another key
        };
        let plain = self
            .secrets_key()?
            .unseal(client_id, path, &nonce, &ciphertext);
        Ok(plain.and_then(|bytes| String::from_utf8(bytes).ok()))
    }
}
