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
    /// What the server wrote to stderr up to the line saying where it listens.
    pub startup_log: String,
    _temp: Option<tempfile::TempDir>,
    /// Requests without credentials (the server's anonymous contributor).
    anonymous: Caller,
    agent_token: String,
}

/// The client the harness creates in every data dir, to call agent-only endpoints.
const TEST_AGENT: (&str, &str) = ("tf-test-agent", "test-agent-secret-0123456789");

/// Makes HTTP requests to the server, with or without an access token.
#[derive(Clone)]
pub struct Caller {
    address: String,
    token: Option<String>,
}

impl std::ops::Deref for Server {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.anonymous
    }
}

/// Polls `done` until it holds; the generous deadline only bounds a broken run.
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// Runs `tf` with `args` to the end.
pub fn tf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(args)
        .output()
        .expect("run tf")
}

/// Runs `tf clients …` on a data dir; panics with its output on failure.
pub fn tf_clients(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tf"))
        .arg("clients")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run tf clients");
    assert!(
        output.status.success(),
        "tf clients {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates a client with `secret` on a data dir.
pub fn add_client(data_dir: &Path, client_id: &str, role: &str, secret: &str, extra: &[&str]) {
    let secret_file = data_dir.join(format!("{client_id}.secret"));
    std::fs::write(&secret_file, secret).expect("write secret file");
    let mut args = vec![
        "add",
        client_id,
        "--role",
        role,
        "--secret-file",
        secret_file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    tf_clients(data_dir, &args);
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
        Server::start_at(data_dir, "127.0.0.1:0", extra_args)
    }

    /// A server on `data_dir` listening on `bind` (a restart on the same address).
    pub fn start_at(data_dir: &Path, bind: &str, extra_args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tf"));
        command
            .arg("serve")
            .args(["--bind", bind, "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        Server::spawn(command, Some(data_dir))
    }

    /// A server on a fresh data dir whose open-file limits (soft, hard) are set before it
    /// starts, as `ulimit -n` would.
    pub fn start_with_open_file_limit(soft: u64, hard: u64, extra_args: &[&str]) -> Server {
        use std::os::unix::process::CommandExt;
        let temp = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tf"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(temp.path())
            .args(extra_args);
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut server = Server::spawn(command, Some(temp.path()));
        server._temp = Some(temp);
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A server whose data dir is a private tmpfs of `kib` KiB, to see a full disk
    /// (a user + mount namespace, so no privileges are needed).
    pub fn start_on_small_disk(kib: u32) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_str().expect("utf-8 path").to_string();
        let tf = env!("CARGO_BIN_EXE_tf");
        let (agent, secret) = TEST_AGENT;
        // The tmpfs hides the directory's contents: the test agent is created after mounting.
        let script = format!(
            "mount -t tmpfs -o size={kib}k tmpfs '{data_dir}' && printf %s '{secret}' > '{data_dir}/{agent}.secret' \
             && '{tf}' clients --data-dir '{data_dir}' add {agent} --role agent --secret-file '{data_dir}/{agent}.secret' >/dev/null \
             && exec '{tf}' serve --bind 127.0.0.1:0 --data-dir '{data_dir}'"
        );
        let mut command = Command::new("unshare");
        command.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
        let mut server = Server::spawn(command, None);
        server._temp = Some(temp);
        server
    }

    /// Starts the server `command` runs on `data_dir`, creating the test agent there
    /// first (unless `data_dir` is `None`: the command does it).
    fn spawn(mut command: Command, data_dir: Option<&Path>) -> Server {
        if let Some(data_dir) =
            data_dir.filter(|dir| !dir.join(format!("{}.secret", TEST_AGENT.0)).exists())
        {
            add_client(data_dir, TEST_AGENT.0, "agent", TEST_AGENT.1, &[]);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("TF_BIND")
            .env_remove("WEBHOOK_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tf serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut startup_log = String::new();
        let address = loop {
            let line = lines
                .next()
                .expect("tf serve exited before listening")
                .expect("read stderr");
            startup_log.push_str(&line);
            startup_log.push('\n');
            let after = line.split("listening on ").nth(1).map(|rest| {
                rest.trim_start_matches("https://")
                    .trim_start_matches("http://")
            });
            if let Some(rest) = after {
                break rest
                    .split([',', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut server = Server {
            child,
            anonymous: Caller {
                address: address.clone(),
                token: None,
            },
            address,
            data_dir: data_dir.map(Path::to_path_buf).unwrap_or_default(),
            startup_log,
            _temp: None,
            agent_token: String::new(),
        };
        // Logged in once the server is owned, so a failed login still stops the process.
        server.agent_token = server.login(TEST_AGENT.0, TEST_AGENT.1)["access_token"]
            .as_str()
            .expect("an access token")
            .to_string();
        server
    }

    /// A refresh token of the test agent, as an agent's token file holds it.
    #[allow(dead_code)] // for the agent tests, which share this harness
    pub fn agent_refresh_token(&self) -> String {
        self.login(TEST_AGENT.0, TEST_AGENT.1)["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string()
    }

    /// Requests as the test agent (role agent).
    pub fn agent(&self) -> Caller {
        self.with_token(&self.agent_token)
    }

    /// Requests with the given access token.
    pub fn with_token(&self, token: &str) -> Caller {
        Caller {
            address: self.address.clone(),
            token: Some(token.to_string()),
        }
    }

    /// Creates a client (on the data dir, like an admin on the lab host) and returns a
    /// caller with its access token.
    pub fn client(&self, client_id: &str, role: &str, extra: &[&str]) -> Caller {
        let secret = format!("{client_id}-secret-0123456789");
        add_client(&self.data_dir, client_id, role, &secret, extra);
        let token = self.login(client_id, &secret)["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        self.with_token(&token)
    }

    /// Claims one job for `agent` from `queue`; `None` on 204.
    pub fn claim(&self, agent: &str, queue: &str) -> Option<Value> {
        let cookie = format!("agent_name={agent}");
        let response = self.agent().request(
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

    /// The server process's resident memory, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
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

    /// `POST /v1/oauth2/token` with HTTP Basic credentials; the JSON answer.
    pub fn login(&self, client_id: &str, secret: &str) -> Value {
        use base64::Engine;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
        let header = format!("Basic {basic}");
        let response = self.request(
            "POST",
            "/v1/oauth2/token",
            &[("Authorization", &header)],
            b"",
        );
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
#[allow(dead_code)] // for the server tests only
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
