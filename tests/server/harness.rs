//! Starts the real `tf` binary on a free port with its own data dir, and talks HTTP/1.1
//! to it with a deliberately tiny client (one connection per request), so the tests see
//! exactly the bytes a real client would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub address: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh, temporary data dir.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_in(temp.path(), extra_args);
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir`, which outlives it (for restart tests).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tf"));
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        Server::spawn(command, data_dir)
    }

    /// A server whose data dir is a private tmpfs of `kib` KiB, to see a full disk
    /// (a user + mount namespace, so no privileges are needed).
    pub fn start_on_small_disk(kib: u32) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_str().expect("utf-8 path").to_string();
        let script = format!(
            "mount -t tmpfs -o size={kib}k tmpfs '{data_dir}' && exec '{}' serve --bind 127.0.0.1:0 --data-dir '{data_dir}'",
            env!("CARGO_BIN_EXE_tf")
        );
        let mut command = Command::new("unshare");
        command.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
        let mut server = Server::spawn(command, temp.path());
        server._temp = Some(temp);
        server
    }

    fn spawn(mut command: Command, data_dir: &Path) -> Server {
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("TF_BIND")
            .env_remove("WEBHOOK_URL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tf serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("tf serve exited before listening")
                .expect("read stderr");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest
                    .split([',', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        }
    }

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
        let boundary = "tf-test-boundary-7d3f";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{part_name}\"; filename=\"file.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.post_raw(
            path,
            &format!("multipart/form-data; boundary={boundary}"),
            &body,
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        send(&self.address, method, path, headers, body).expect("HTTP exchange with tf serve")
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

    /// Claims one job for `agent` from `queue`; `None` on 204.
    pub fn claim(&self, agent: &str, queue: &str) -> Option<Value> {
        let cookie = format!("agent_name={agent}");
        let response = self.request(
            "GET",
            &format!("/v1/job?queue={queue}"),
            &[("Cookie", &cookie)],
            b"",
        );
        match response.status {
            200 => Some(response.json()),
            204 => None,
            other => panic!("claim answered {other}: {}", response.text()),
        }
    }

    /// Stops the server the way a crash or an OOM kill would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child
            .wait()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let mut stream = TcpStream::connect(address)?;
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
