//! A deliberately tiny HTTP/1.1 client (one connection per request), so the tests see
//! exactly the bytes a real client would.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

/// Makes HTTP requests to the server, with or without an access token.
#[derive(Clone)]
pub struct Caller {
    pub(crate) address: String,
    pub(crate) token: Option<String>,
}

impl Caller {
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("Content-Type", content_type)], body)
    }

    /// Uploads `content` as the multipart part `part_name`, like `requests.post(files=…)`.
    pub fn upload(&self, path: &str, part_name: &str, content: &[u8]) -> Response {
        self.try_upload(path, part_name, content)
            .expect("HTTP exchange with tf serve")
    }

    /// Like `upload`, for tests where the server may be gone.
    pub fn try_upload(
        &self,
        path: &str,
        part_name: &str,
        content: &[u8],
    ) -> std::io::Result<Response> {
        let boundary = "tf-test-boundary-7d3f";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{part_name}\"; filename=\"file.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.try_request("POST", path, &[("Content-Type", &content_type)], &body)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .expect("HTTP exchange with tf serve")
    }

    /// Like `request`, for tests where the server may be gone.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let bearer = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("Authorization", bearer));
        }
        send(&self.address, method, path, &all, body)
    }

    /// `POST /v1/oauth2/token` with HTTP Basic credentials, whatever it is answered.
    pub fn try_login(&self, client_id: &str, secret: &str) -> Response {
        use base64::Engine;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
        let header = format!("Basic {basic}");
        self.request(
            "POST",
            "/v1/oauth2/token",
            &[("Authorization", &header)],
            b"",
        )
    }

    /// `POST /v1/oauth2/token` with HTTP Basic credentials; the JSON answer.
    pub fn login(&self, client_id: &str, secret: &str) -> Value {
        let response = self.try_login(client_id, secret);
        assert_eq!(
            response.status,
            200,
            "login of {client_id}: {}",
            response.text()
        );
        response.json()
    }

    /// Stores a secret of `owner` at `path` (`PUT /v1/secrets/<owner>/<path>`).
    pub fn put_secret(&self, owner: &str, path: &str, value: &str) -> Response {
        self.request(
            "PUT",
            &format!("/v1/secrets/{owner}/{path}"),
            &[("Content-Type", "application/json")],
            serde_json::json!({ "value": value }).to_string().as_bytes(),
        )
    }

    /// Submits a job and returns its id.
    pub fn submit(&self, job: &Value) -> String {
        let response = self.post_json("/v1/job", job);
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["job_id"]
            .as_str()
            .expect("job_id")
            .to_string()
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

pub fn send(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    exchange(
        TcpStream::connect(address)?,
        address,
        method,
        path,
        headers,
        body,
    )
}

/// Like `send`, from another loopback address (`127.0.0.2`, …): another machine, as the
/// server sees it.
pub fn send_from(
    source: std::net::Ipv4Addr,
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let target: std::net::SocketAddr = address.parse().map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        socket.connect(target).await?.into_std()
    })?;
    stream.set_nonblocking(false)?;
    exchange(stream, address, method, path, headers, body)
}

fn exchange(
    mut stream: TcpStream,
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| invalid("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
