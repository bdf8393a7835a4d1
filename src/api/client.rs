//! `Api`, the one HTTP client of the v1 API: the server's base address, the bearer token
//! (renewed once when the server refuses it) and the `agent_name` cookie; callers hand it
//! `Call`s from `v1`, or paths and bodies.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::auth::Bearer;
use super::body::{ApiBody, RequestBody, Upload};
use super::call::{Answer, Call};
use super::error::ApiError;
use super::reply::Reply;

/// A response body: streamed from the server, or already read.
type ReplyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

#[derive(Clone)]
pub struct Api {
    base: String,
    http: Client<HttpsConnector<HttpConnector>, ApiBody>,
    bearer: Option<Arc<Bearer>>,
    cookie: Option<HeaderValue>,
}

impl Api {
    /// A client for `server_address`, read as the reference reads it: `http://` is added
    /// when the value does not start with `http`, and any path part is dropped (the
    /// reference joins absolute `/v1/...` paths onto it).
    pub fn new(server_address: &str) -> anyhow::Result<Api> {
        let base = base_url(server_address)?;
        let with_roots = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            // A bare device host may have no CA bundle at all; plain HTTP needs none.
            Err(_) if !base.starts_with("https:") => {
                let no_roots = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(no_roots)
            }
            Err(e) => anyhow::bail!("cannot load the system's TLS root certificates: {e}"),
        };
        let connector = with_roots.https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Api {
            base,
            http,
            bearer: None,
            cookie: None,
        })
    }

    /// Authenticates with the tokens `bearer` obtains.
    pub fn with_bearer(mut self, bearer: Bearer) -> Api {
        self.bearer = Some(Arc::new(bearer));
        self
    }

    /// Identifies as agent `name` (the server needs the `agent_name` cookie to hand out jobs).
    pub fn with_agent_cookie(mut self, name: &str) -> Api {
        self.cookie = HeaderValue::from_str(&format!("agent_name={name}")).ok();
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `call` and returns the answer whatever its status.
    pub async fn send<A>(&self, call: Call<A>, timeout: Duration) -> Result<Reply, ApiError> {
        self.request(call.method, &call.path, call.body, timeout)
            .await
    }

    /// Sends `call`, insists on a 2xx answer, and reads it.
    pub async fn call<A: Answer>(
        &self,
        call: Call<A>,
        timeout: Duration,
    ) -> Result<A::Output, ApiError> {
        let path = call.path.clone();
        let reply = self
            .succeed(call.method, &call.path, call.body, timeout)
            .await?;
        A::read(reply).map_err(|e| ApiError::Answer {
            path,
            reason: e.to_string(),
        })
    }

    /// Sends one request and returns the answer whatever its status.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        // The token first: obtaining it may take a person logging in, not a timeout.
        let token = self.current_token().await?;
        self.exchange(path, timeout, self.respond(&method, path, &body, token))
            .await
    }

    /// The bearer token to send (fetched on first use), if this client has one.
    async fn current_token(&self) -> Result<Option<String>, ApiError> {
        match &self.bearer {
            Some(bearer) => bearer.current().await.map_err(ApiError::Auth),
            None => Ok(None),
        }
    }

    /// A JSON POST without the bearer token and without the 401 replay (token renewal).
    pub async fn post_unauthenticated(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        self.send_authorized(Method::POST, path, "", RequestBody::json(body), timeout)
            .await
    }

    /// A request with this `Authorization` header (none when empty) instead of the bearer
    /// token, and without the 401 replay: the login requests themselves.
    pub async fn send_authorized(
        &self,
        method: Method,
        path: &str,
        authorization: &str,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        let authorization = (!authorization.is_empty()).then(|| authorization.to_string());
        let response = async {
            let response = self
                .respond_once(&method, path, &body, authorization)
                .await?;
            Ok(response.map(BodyExt::boxed))
        };
        self.exchange(path, timeout, response).await
    }

    /// Waits for `response` and its whole body, within `timeout`.
    async fn exchange(
        &self,
        path: &str,
        timeout: Duration,
        response: impl Future<Output = Result<Response<ReplyBody>, ApiError>>,
    ) -> Result<Reply, ApiError> {
        let exchange = async {
            let (parts, body) = response.await?.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| self.unreachable(path, format!("answer cut off: {e}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            self.unreachable(path, format!("no answer within {}s", timeout.as_secs()))
        })?
    }

    /// The server's response, body still streaming. When the server refuses the access
    /// token (401, or the 403 it gives for a token signed with another key), the token is
    /// renewed and the request replayed once.
    async fn respond(
        &self,
        method: &Method,
        path: &str,
        body: &RequestBody,
        token: Option<String>,
    ) -> Result<Response<ReplyBody>, ApiError> {
        let Some(bearer) = &self.bearer else {
            let response = self.respond_once(method, path, body, None).await?;
            return Ok(response.map(BodyExt::boxed));
        };
        let authorization = token.map(|t| format!("Bearer {t}"));
        let response = self.respond_once(method, path, body, authorization).await?;
        let (response, token_refused) = match response.status() {
            StatusCode::UNAUTHORIZED => (response.map(BodyExt::boxed), true),
            StatusCode::FORBIDDEN => {
                // A short error message: read it to tell a bad token from a missing role.
                let (parts, incoming) = response.into_parts();
                let bytes = incoming
                    .collect()
                    .await
                    .map_err(|e| self.unreachable(path, format!("answer cut off: {e}")))?
                    .to_bytes();
                let message = Reply {
                    status: parts.status,
                    headers: HeaderMap::new(),
                    body: bytes.clone(),
                }
                .message();
                let body = Full::new(bytes).map_err(|never| match never {}).boxed();
                let about_token = message.to_ascii_lowercase().contains("token");
                (Response::from_parts(parts, body), about_token)
            }
            _ => (response.map(BodyExt::boxed), false),
        };
        if !token_refused {
            return Ok(response);
        }
        match bearer.renew().await.map_err(ApiError::Auth)? {
            Some(fresh) => Ok(self
                .respond_once(method, path, body, Some(format!("Bearer {fresh}")))
                .await?
                .map(BodyExt::boxed)),
            None => Ok(response),
        }
    }

    async fn respond_once(
        &self,
        method: &Method,
        path: &str,
        body: &RequestBody,
        authorization: Option<String>,
    ) -> Result<Response<Incoming>, ApiError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie.clone());
        }
        for (name, value) in body.headers() {
            request = request.header(name, value);
        }
        let request = request
            .body(body.open().await?)
            .map_err(|e| self.unreachable(path, format!("invalid request: {e}")))?;
        self.http
            .request(request)
            .await
            .map_err(|e| self.unreachable(path, describe_client_error(&e, &self.base)))
    }

    fn unreachable(&self, path: &str, reason: String) -> ApiError {
        ApiError::Unreachable {
            url: format!("{}{path}", self.base),
            reason,
        }
    }

    /// Sends a request and insists on a 2xx answer.
    async fn succeed(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        let reply = self.request(method.clone(), path, body, timeout).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(ApiError::Status {
                method,
                path: path.to_string(),
                status: reply.status,
                message: reply.message(),
            })
        }
    }

    /// A JSON POST to `path` (the agent's outbox keeps paths of the `v1` calls it sends
    /// later), insisting on a 2xx answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        self.succeed(Method::POST, path, RequestBody::json(body), timeout)
            .await
    }

    /// Uploads a file as a multipart form, streamed from disk.
    pub async fn upload(
        &self,
        path: &str,
        upload: Upload,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        self.succeed(Method::POST, path, RequestBody::Upload(upload), timeout)
            .await
    }

    /// Streams a download into `destination`; `Ok(false)` when the server had nothing (204).
    pub async fn download(
        &self,
        path: &str,
        destination: &Path,
        timeout: Duration,
    ) -> Result<bool, ApiError> {
        let file_error = |source| ApiError::File {
            path: destination.to_path_buf(),
            source,
        };
        let token = self.current_token().await?;
        let transfer = async {
            let response = self
                .respond(&Method::GET, path, &RequestBody::Empty, token)
                .await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                let reply = Reply {
                    status,
                    headers: HeaderMap::new(),
                    body: body.unwrap_or_default(),
                };
                return Err(ApiError::Status {
                    method: Method::GET,
                    path: path.to_string(),
                    status,
                    message: reply.message(),
                });
            }
            if status == StatusCode::NO_CONTENT {
                return Ok(false);
            }
            let mut file = tokio::fs::File::create(destination)
                .await
                .map_err(file_error)?;
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| self.unreachable(path, format!("download cut off: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    file.write_all(data).await.map_err(file_error)?;
                }
            }
            file.flush().await.map_err(file_error)?;
            Ok(true)
        };
        tokio::time::timeout(timeout, transfer).await.map_err(|_| {
            self.unreachable(
                path,
                format!("download not done within {}s", timeout.as_secs()),
            )
        })?
    }
}

/// `scheme://authority` of a server address, as the reference agent and CLI read it.
fn base_url(server_address: &str) -> anyhow::Result<String> {
    let address = server_address.trim();
    let with_scheme = if address.to_ascii_lowercase().starts_with("http") {
        address.to_string()
    } else if address.contains("://") {
        anyhow::bail!("server address {server_address:?}: only http:// and https:// are supported");
    } else {
        format!("http://{address}")
    };
    let uri: hyper::Uri = with_scheme
        .parse()
        .map_err(|e| anyhow::anyhow!("server address {server_address:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => {
            Ok(format!("{scheme}://{authority}"))
        }
        _ => anyhow::bail!(
            "server address {server_address:?} must look like http://host:port or https://host"
        ),
    }
}

/// The innermost cause of a connection failure is the one a person can act on
/// ("Connection refused"), not hyper's "client error (Connect)".
/// What went wrong, in words: an address whose scheme is not what the server speaks, or
/// else the innermost cause.
fn describe_client_error(error: &hyper_util::client::legacy::Error, base: &str) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(mismatch) = scheme_mismatch(cause, base) {
            return mismatch;
        }
        match cause.source() {
            Some(inner) => cause = inner,
            None => return cause.to_string(),
        }
    }
}

/// A plain-HTTP server behind an `https://` address (its answer is not a TLS record), or
/// a TLS server behind an `http://` one (its alert is not an HTTP status line).
fn scheme_mismatch(cause: &(dyn std::error::Error + 'static), base: &str) -> Option<String> {
    if let Some(host) = base.strip_prefix("https://") {
        if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
            tls_error(cause)
        {
            return Some(format!(
                "the server at {base} answered without TLS: if it serves plain HTTP, use http://{host}"
            ));
        }
    }
    if let Some(host) = base.strip_prefix("http://") {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return Some(format!(
                "the server at {base} did not answer in HTTP: if it serves HTTPS, use https://{host}"
            ));
        }
    }
    None
}

/// The TLS error inside `cause`, which comes wrapped in one `io::Error` or more (whose
/// `source()` skips what they wrap).
fn tls_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut error = cause;
    loop {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        error = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn server_addresses_read_like_the_reference() {
        assert_eq!(base_url("host:5000").unwrap(), "http://host:5000");
        assert_eq!(
            base_url("https://tf.example.com/prefix/").unwrap(),
            "https://tf.example.com"
        );
        assert_eq!(base_url("HTTP://h").unwrap(), "http://h");
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("").is_err());
    }
}
