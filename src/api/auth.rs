//! Bearer tokens from a refresh-token file, the way the reference agent gets them: the
//! file holds `{"refresh_token": "..."}`; `POST /v1/oauth2/refresh` trades it for an
//! access token, which is kept until the server answers 401.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::Api;

pub struct TokenFile {
    path: PathBuf,
    /// `None`: not asked yet. `Some(None)`: asked and got nothing (no file, refused), so
    /// requests go out without a token until a 401 makes us ask again.
    cached: Mutex<Option<Option<String>>>,
}

const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

impl TokenFile {
    pub fn new(path: &Path) -> TokenFile {
        TokenFile {
            path: path.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// The current access token, fetched on first use.
    pub async fn access_token(&self, api: &Api) -> Option<String> {
        let mut cached = self.cached.lock().await;
        if cached.is_none() {
            *cached = Some(self.refresh(api).await);
        }
        cached.clone().flatten()
    }

    /// Forgets the access token (the server refused it) and fetches a new one.
    pub async fn renew(&self, api: &Api) -> Option<String> {
        let mut cached = self.cached.lock().await;
        let fresh = self.refresh(api).await;
        *cached = Some(fresh.clone());
        fresh
    }

    async fn refresh(&self, api: &Api) -> Option<String> {
        let refresh_token = match self.read_refresh_token() {
            Ok(token) => token,
            Err(reason) => {
                tracing::warn!(
                    "Failed to read token file {}: {reason}",
                    self.path.display()
                );
                return None;
            }
        };
        // Sent without a bearer token and without the 401 replay: this is the renewal.
        let reply = api
            .send_unauthenticated(
                "/v1/oauth2/refresh",
                &json!({ "refresh_token": refresh_token }),
                REFRESH_TIMEOUT,
            )
            .await;
        match reply {
            Ok(reply) if reply.status.is_success() => {
                let token = reply
                    .json::<Value>()
                    .ok()
                    .and_then(|v| v.get("access_token")?.as_str().map(str::to_string));
                if token.is_none() {
                    tracing::warn!("the token refresh answer has no access_token");
                }
                token
            }
            Ok(reply) => {
                tracing::warn!(
                    "Failed to refresh access token: the server answered {}: {}",
                    reply.status,
                    reply.message()
                );
                None
            }
            Err(error) => {
                tracing::warn!("Failed to refresh access token: {error}");
                None
            }
        }
    }

    fn read_refresh_token(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        value
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "no \"refresh_token\" string in it".to_string())
    }
}
