//! The agent's token file (`{"refresh_token": "..."}`, which the charm and `tf clients`
//! write), and the bearer tokens traded for it.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::auth::Bearer;
use super::client::Api;
use super::v1;

const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

impl Api {
    /// Authenticates the agent's way: the refresh token in `path`, traded at
    /// `POST /v1/oauth2/refresh`. Failures are logged and leave the agent without a token.
    /// A new refresh token the server hands out (`tf serve` does once the old one is half
    /// way through its life) replaces the one in the file.
    pub fn with_token_file(self, path: &Path) -> Api {
        let (api, path) = (self.clone(), path.to_path_buf());
        self.with_bearer(Bearer::new(Box::new(move || {
            let (api, path) = (api.clone(), path.clone());
            Box::pin(async move { Ok(refresh_from_file(&api, &path).await) })
        })))
    }
}

async fn refresh_from_file(api: &Api, path: &Path) -> Option<String> {
    let refresh_token = match read_refresh_token(path) {
        Ok(token) => token,
        Err(reason) => {
            tracing::warn!("Failed to read token file {}: {reason}", path.display());
            return None;
        }
    };
    // A reference server ignores `renew`.
    let reply = api
        .post_unauthenticated(
            &v1::refresh_path(true),
            &json!({ "refresh_token": refresh_token }),
            REFRESH_TIMEOUT,
        )
        .await;
    match reply {
        Ok(reply) if reply.status.is_success() => {
            let answer = reply.json::<Value>().unwrap_or_default();
            if let Some(renewed) = answer.get("refresh_token").and_then(Value::as_str) {
                // On failure the old token goes on until it expires, and the next
                // refresh tries again.
                match write_refresh_token(path, renewed) {
                    Ok(()) => tracing::info!("Renewed the refresh token in {}", path.display()),
                    Err(error) => tracing::warn!("{error:#}"),
                }
            }
            let token = answer
                .get("access_token")
                .and_then(Value::as_str)
                .map(str::to_string);
            if token.is_none() {
                tracing::warn!("the token refresh answer has no access_token");
            }
            token
        }
        Ok(reply) => {
            // tf serve says so in every refresh answer; a reference server has no
            // `tf clients`.
            let from_tf_serve = reply.headers.contains_key(v1::EXTENSIONS_HEADER);
            let hint = if reply.status == hyper::StatusCode::BAD_REQUEST && from_tf_serve {
                format!(
                    " (the token in {} no longer works: on the server's host, \
                     `tf clients token CLIENT --token-file FILE` writes a new one)",
                    path.display()
                )
            } else {
                String::new()
            };
            tracing::warn!(
                "Failed to refresh access token: the server answered {}: {}{hint}",
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

/// Puts `refresh_token` into a token file (mode 0600, replaced in one step), keeping
/// whatever else an existing file holds (the charm also writes `obtained_at`). An
/// existing file that is not a JSON object is not a token file, and is left alone.
pub fn write_refresh_token(path: &Path, refresh_token: &str) -> anyhow::Result<()> {
    let mut content = match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str::<serde_json::Map<String, Value>>(&text).map_err(|_| {
                anyhow::anyhow!(
                    "{} exists and is not a JSON object, so not a token file: not overwriting it",
                    path.display()
                )
            })?
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(error) => anyhow::bail!("cannot read the token file {}: {error}", path.display()),
    };
    content.insert("refresh_token".into(), Value::String(refresh_token.into()));
    crate::private_file::replace(path, Value::Object(content).to_string().as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write the token file {}: {e}", path.display()))
}

/// The refresh token in a token file (`{"refresh_token": "..."}`), or why there is none.
pub fn read_refresh_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    value
        .get("refresh_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no \"refresh_token\" string in it".to_string())
}
