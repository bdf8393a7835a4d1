//! The reference CLI's login chain, run before the first request and again on a 401:
//! client credentials (`POST /v1/oauth2/token`), else the stored refresh token
//! (`POST /v1/oauth2/refresh`), else OIDC's device flow (a 404 from `/oidc/auth-init`
//! means the server has none: carry on anonymously). The refresh token is kept in
//! `$XDG_CONFIG_HOME/testflinger-cli/<host>/auth.conf`, as the reference keeps it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};

use super::config::{config_home, Ini};
use crate::api::{v1, Api, Reply, RequestBody, TokenResult};

const TIMEOUT: Duration = Duration::from_secs(15);
const AUTH_SECTION: &str = "AUTH";

const BAD_CREDENTIALS: &str =
    "Authentication with Testflinger server failed. Check your client id and secret key";
const NOT_AUTHORIZED: &str = "Authorization error received from server. \nMake sure you are connected to the right network or contact Testflinger admin for more information";
const EXPIRED_REFRESH: &str = "Authentication with Testflinger server failed with following reason: Invalid or expired refresh token. Please reauthenticate with server.";

pub struct Login {
    api: Api,
    store: PathBuf,
    /// Who we are: from the flags or settings, from `auth.conf`, or from an OIDC token.
    client_id: Mutex<Option<String>>,
    secret_key: Option<String>,
    /// Why the server did not answer the last login request, if it did not: the chain
    /// then goes on anonymously and the command's own request reports it, but `login`
    /// has no request of its own.
    unreachable: Mutex<Option<String>>,
}

impl Login {
    pub fn new(
        api: Api,
        server: &str,
        client_id: Option<String>,
        secret_key: Option<String>,
    ) -> Login {
        Login {
            api,
            store: auth_file(server),
            client_id: Mutex::new(client_id),
            secret_key,
            unreachable: Mutex::new(None),
        }
    }

    pub fn client_id(&self) -> Option<String> {
        self.client_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_client_id(&self, id: Option<String>) {
        *self.client_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// Why the server could not be reached while logging in, if it could not.
    pub fn unreachable(&self) -> Option<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the stored refresh token (what `login` does first).
    pub fn forget(&self) {
        if std::fs::remove_file(&self.store).is_err() && self.store.exists() {
            let _ = std::fs::write(&self.store, "");
        }
    }

    /// The chain: an access token, `None` to go on anonymously, or an error for the user.
    pub async fn obtain(&self) -> TokenResult {
        if let (Some(id), Some(key)) = (self.client_id(), self.secret_key.clone()) {
            return self.with_credentials(&id, &key).await;
        }
        let stored = Ini::read(&self.store, AUTH_SECTION);
        if let Some(refresh_token) = stored.get("refresh_token").filter(|t| !t.is_empty()) {
            self.set_client_id(stored.get("client_id").map(str::to_string));
            match self.refresh(refresh_token).await? {
                Refreshed::Token(token) => return Ok(Some(token)),
                Refreshed::Nothing => return Ok(None),
                Refreshed::Expired => {
                    self.forget();
                    return match self.oidc().await? {
                        Some(token) => Ok(Some(token)),
                        None => Err(EXPIRED_REFRESH.into()),
                    };
                }
            }
        }
        self.oidc().await
    }

    async fn with_credentials(&self, id: &str, key: &str) -> TokenResult {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"));
        let Some(reply) = self
            .ask(
                &v1::token_path(),
                &format!("Basic {basic}"),
                RequestBody::Empty,
                "Connection to testflinger server timed out while authenticating with basic client_id+secret_key credentials.",
            )
            .await?
        else {
            return Ok(None);
        };
        match reply.status.as_u16() {
            200 => {
                let body: Value = reply.json().unwrap_or(Value::Null);
                if let Some(refresh) = body.get("refresh_token").and_then(Value::as_str) {
                    self.store_token(id, refresh);
                }
                Ok(body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .map(str::to_string))
            }
            401 => Err(BAD_CREDENTIALS.into()),
            403 => Err(NOT_AUTHORIZED.into()),
            _ => Ok(None),
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Refreshed, String> {
        let body = RequestBody::json(&json!({"refresh_token": refresh_token}));
        let Some(reply) = self
            .ask(
                &v1::refresh_path(false),
                "",
                body,
                "Connection timed out while refreshing authentication token.",
            )
            .await?
        else {
            return Ok(Refreshed::Nothing);
        };
        match reply.status.as_u16() {
            200 => Ok(reply
                .json::<Value>()
                .ok()
                .and_then(|b| b.get("access_token")?.as_str().map(str::to_string))
                .map_or(Refreshed::Nothing, Refreshed::Token)),
            400 => Ok(Refreshed::Expired),
            401 => Err(BAD_CREDENTIALS.into()),
            403 => Err(NOT_AUTHORIZED.into()),
            _ => Ok(Refreshed::Nothing),
        }
    }

    /// OIDC's device flow. `tf serve` has no OIDC and answers 404: anonymous.
    async fn oidc(&self) -> TokenResult {
        let failed = |reason: &str| {
            format!("OIDC authentication with Testflinger server failed with following reason: {reason} Please reauthenticate with server.")
        };
        let Some(init) = self
            .ask(
                "/oidc/auth-init",
                "",
                RequestBody::Empty,
                "Connection timed out while initiating OIDC login.",
            )
            .await?
        else {
            return Ok(None);
        };
        match init.status.as_u16() {
            404 => return Ok(None),
            200 => {}
            status => {
                return Err(failed(&format!(
                    "Failed to initiate OIDC login: {status} {}",
                    text(&init)
                )))
            }
        }
        let flow: Value = init
            .json()
            .map_err(|e| failed(&format!("Failed to initiate OIDC login: {e}")))?;
        let field = |name: &str| {
            flow.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut interval = flow.get("interval").and_then(Value::as_u64).unwrap_or(5);
        let expires_in = flow
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        eprintln!(
            "Please visit {} and enter code {} to login.",
            field("verification_uri"),
            field("user_code")
        );
        let deadline = Instant::now() + Duration::from_secs(expires_in);
        let poll_path = format!("/oidc/auth-poll/{}", field("request_id"));
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            let Some(reply) = self
                .ask(
                    &poll_path,
                    "",
                    RequestBody::Empty,
                    "Connection timed out while authenticating with OIDC.",
                )
                .await?
            else {
                continue; // the server is briefly away: ask again at the next interval
            };
            let body: Value = reply.json().unwrap_or(Value::Null);
            if reply.status.as_u16() == 200 {
                let access = body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let who = access.as_deref().and_then(client_id_in_token);
                if let (Some(who), Some(refresh)) =
                    (&who, body.get("refresh_token").and_then(Value::as_str))
                {
                    self.store_token(who, refresh);
                }
                self.set_client_id(who);
                return Ok(access);
            }
            match body.get("error").and_then(Value::as_str) {
                Some("authorization_pending") => {}
                Some("slow_down") => {
                    let extra = reply
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(5);
                    interval += extra;
                }
                Some("access_denied") => {
                    return Err(failed("Authentication failed: access denied"))
                }
                Some("expired_token") => {
                    return Err(failed("Authentication timed out. Please try again."))
                }
                _ => {
                    return Err(failed(&format!(
                        "Unexpected error during OIDC authentication: {} {}",
                        reply.status,
                        text(&reply)
                    )))
                }
            }
        }
        Err(failed("Authentication timed out. Please try again."))
    }

    /// A login request. A server that does not answer is no login failure (`None`: go on
    /// anonymously, the command's own request will report it); a timeout is one.
    async fn ask(
        &self,
        path: &str,
        authorization: &str,
        body: RequestBody,
        timeout_message: &str,
    ) -> Result<Option<Reply>, String> {
        match self
            .api
            .send_authorized(Method::POST, path, authorization, body, TIMEOUT)
            .await
        {
            Ok(reply) => Ok(Some(reply)),
            Err(crate::api::ApiError::Unreachable { reason, .. })
                if reason.starts_with("no answer within") =>
            {
                Err(timeout_message.to_string())
            }
            Err(crate::api::ApiError::Unreachable { reason, .. }) => {
                *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }

    fn store_token(&self, client_id: &str, refresh_token: &str) {
        let mut ini = Ini::default();
        ini.set("client_id", client_id);
        ini.set("refresh_token", refresh_token);
        let _ = ini.write_private(&self.store, AUTH_SECTION);
        self.set_client_id(Some(client_id.to_string()));
    }
}

enum Refreshed {
    Token(String),
    /// The server answered something unexpected: go on without a token.
    Nothing,
    /// 400: the refresh token is no longer valid.
    Expired,
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).trim().to_string()
}

/// `permissions.client_id` of a JWT, read without checking the signature (as the
/// reference does: it is only a display name).
pub fn client_id_in_token(token: &str) -> Option<String> {
    token_claims(token)?
        .pointer("/permissions/client_id")?
        .as_str()
        .map(str::to_string)
}

/// The claims of a JWT, unverified.
pub fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `testflinger-cli/<host>/auth.conf`: the host name only (no port), lower-cased, every
/// run of characters outside `[A-Za-z0-9_]` turned into `_`.
fn auth_file(server: &str) -> PathBuf {
    let host = server
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_lowercase))
        .unwrap_or_default();
    let mut folded = String::new();
    let mut in_run = false;
    for c in host.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '_';
        if keep {
            folded.push(c);
        } else if !in_run {
            folded.push('_');
        }
        in_run = !keep;
    }
    config_home()
        .join("testflinger-cli")
        .join(folded)
        .join("auth.conf")
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_files_are_per_host() {
        let path = super::auth_file("https://Testflinger.Canonical.com:8443/x");
        assert!(
            path.ends_with("testflinger-cli/testflinger_canonical_com/auth.conf"),
            "{path:?}"
        );
        assert!(super::auth_file("http://127.0.0.1:5000").ends_with("127_0_0_1/auth.conf"));
    }
}
