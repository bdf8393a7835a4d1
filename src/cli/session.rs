//! The client's connection to the server: the settings it resolved, the login chain behind
//! the bearer token, and requests whose failures read as the reference CLI reports them
//! (only 200 is a success; a 204 is "nothing there").

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::config::{Settings, DEFAULT_SERVER};
use super::login::Login;
use crate::api::{Answer, Api, ApiError, Bearer, Call, Reply};
use crate::codec::pyjson;

/// For a whole request and answer (the reference allows 15 s between reads; large results
/// need longer than that in total).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request gave nothing usable.
#[derive(Debug)]
pub enum Failure {
    /// The server answered something other than 200 (a 204 included).
    Status { status: u16, message: String },
    /// No answer at all.
    Network(String),
    /// Ends the command whatever it was doing: a login that failed, a VPN wall.
    Fatal(String),
}

impl Failure {
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Status { message, .. } => message.clone(),
            Failure::Network(reason) | Failure::Fatal(reason) => reason.clone(),
        }
    }

    /// The one line a command prints when it has no better wording for this failure.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Network(reason) => {
                anyhow::anyhow!("Unable to communicate with specified server. ({reason})")
            }
            Failure::Fatal(message) => anyhow::anyhow!("{message}"),
            Failure::Status { status, message } => {
                anyhow::anyhow!(
                    "Unexpected error status from testflinger server: [{status}] {message}"
                )
            }
        }
    }
}

const VPN_MESSAGE: &str = "403 Forbidden Error: Server access requires a VPN connection.\nPlease make sure you are connected to the VPN and try again.";

pub struct Session {
    pub api: Api,
    pub login: Arc<Login>,
    pub settings: Settings,
}

impl Session {
    /// Resolves the server and credentials (flag, then config file, then environment) and
    /// checks the server address the way the reference does.
    pub fn open(
        settings: Settings,
        server_flag: Option<&str>,
        client_id: Option<&str>,
        secret_key: Option<&str>,
    ) -> anyhow::Result<Session> {
        let server = server_flag
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| settings.get("server"))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        if !server.starts_with("http://") && !server.starts_with("https://") {
            anyhow::bail!(
                "Server must start with \"http://\" or \"https://\" - currently set to: \"{server}\""
            );
        }
        let client_id = client_id
            .map(str::to_string)
            .or_else(|| settings.get("client_id"));
        let secret_key = secret_key
            .map(str::to_string)
            .or_else(|| settings.get("secret_key"));
        let plain = Api::new(&server)?;
        let login = Arc::new(Login::new(plain.clone(), &server, client_id, secret_key));
        let chain = login.clone();
        let bearer = Bearer::new(Box::new(move || {
            let chain = chain.clone();
            Box::pin(async move { chain.obtain().await })
        }));
        Ok(Session {
            api: plain.with_bearer(bearer),
            login,
            settings,
        })
    }

    /// Sends `call`; anything but a 200 is a `Failure`. A JSON answer that does not read
    /// counts as a network-class failure, as the reference's `requests` raises it.
    pub async fn call<A: Answer>(&self, call: Call<A>) -> Result<A::Output, Failure> {
        self.call_within(call, TIMEOUT).await
    }

    /// `call`, with a time limit of its own (uploads).
    pub async fn call_within<A: Answer>(
        &self,
        call: Call<A>,
        timeout: Duration,
    ) -> Result<A::Output, Failure> {
        let reply = self
            .api
            .send(call, timeout)
            .await
            .map_err(|error| match error {
                ApiError::Auth(message) => Failure::Fatal(message),
                ApiError::Unreachable { reason, .. } => Failure::Network(reason),
                other => Failure::Network(other.to_string()),
            })?;
        if reply.status.as_u16() != 200 {
            return Err(failure_of(&reply));
        }
        A::read(reply)
            .map_err(|e| Failure::Network(format!("the server's answer is not JSON: {e}")))
    }
}

/// The reference client's reading of a failed answer: the JSON `message` (with the
/// validation details of a 422 appended), else the text; a 403 that is not JSON is the
/// VPN wall in front of Canonical's server.
pub fn failure_of(reply: &Reply) -> Failure {
    let status = reply.status.as_u16();
    let text = String::from_utf8_lossy(&reply.body).trim_end().to_string();
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        if status == 403 {
            return Failure::Fatal(VPN_MESSAGE.to_string());
        }
        return Failure::Status {
            status,
            message: text,
        };
    };
    let mut message = match json.get("message") {
        Some(Value::String(m)) => m.clone(),
        Some(other) => pyjson::repr(other),
        None => text.clone(),
    };
    if status == 422 {
        if let Some(fields) = json.pointer("/detail/json").and_then(Value::as_object) {
            let details: Vec<String> = fields
                .iter()
                .map(|(field, errors)| format!("{field}: {}", pyjson::repr(errors)))
                .collect();
            message = format!("{message} - {}", details.join(", "));
        }
    }
    Failure::Status { status, message }
}
