//! A server's answer, whatever its status.

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A server answer, whatever its status.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; an empty body (the server's 204) reads as `null`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        if self.body.is_empty() {
            serde_json::from_value(Value::Null)
        } else {
            serde_json::from_slice(&self.body)
        }
    }

    /// The error message of a failed answer: the JSON `message` field when there is one
    /// (the reference's error bodies), else the text itself.
    pub(super) fn message(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string())
    }
}
