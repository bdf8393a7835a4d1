//! Load generator for any Testflinger-compatible server.
//!
//!     cargo bench --bench load                       # starts its own `tf serve`
//!     cargo bench --bench load -- --url http://host:5000 --agent ID:SECRET [--connections 32] [--seconds 5]
//!
//! Measures job submission, job claims by concurrent agents, empty-queue polls and log
//! fragment ingest (one fragment per request, then `--fragment-batch N` per request, 32 by
//! default, on `tf serve`'s batch path), each as requests per second with p50/p99 latency. Every connection
//! is one keep-alive HTTP/1.1 connection driven by a task on a single-threaded runtime,
//! so the generator itself uses at most one core.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

struct Options {
    url: Option<String>,
    connections: usize,
    seconds: f64,
    /// One fragment size instead of the default small and large rounds.
    fragment_bytes: Option<usize>,
    /// Fragments per request in the batched rounds (tf's `log-batches`); 1: none.
    fragment_batch: usize,
    /// Run only the figures whose name starts with this.
    only: Option<String>,
    /// `CLIENT_ID:SECRET` of an agent client on the `--url` server (claims and log
    /// fragments need role agent).
    agent: Option<String>,
}

fn options() -> Options {
    let mut options = Options {
        url: None,
        connections: 32,
        seconds: 5.0,
        fragment_bytes: None,
        fragment_batch: 32,
        only: None,
        agent: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => options.url = Some(value().trim_end_matches('/').to_string()),
            "--connections" => options.connections = value().parse().expect("--connections N"),
            "--seconds" => options.seconds = value().parse().expect("--seconds S"),
            "--fragment-bytes" => {
                options.fragment_bytes = Some(value().parse().expect("--fragment-bytes N"))
            }
            "--fragment-batch" => {
                options.fragment_batch = value().parse().expect("--fragment-batch N")
            }
            "--only" => options.only = Some(value()),
            "--agent" => options.agent = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

/// A `tf serve` of our own on a temporary data dir, when no `--url` is given.
struct OwnServer {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent client the generator creates on its own server.
const OWN_AGENT: &str = "bench-agent:bench-agent-secret-0123456789";

fn start_own_server() -> (OwnServer, String) {
    use std::io::BufRead;
    let data = tempfile::tempdir().expect("temp dir");
    let (agent, secret) = OWN_AGENT.split_once(':').unwrap();
    let secret_file = data.path().join("agent.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let created = Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["clients", "--data-dir"])
        .arg(data.path())
        .args(["add", agent, "--role", "agent", "--secret-file"])
        .arg(&secret_file)
        .output()
        .expect("run tf clients");
    assert!(created.status.success(), "tf clients add failed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tf serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("tf serve exited").expect("read");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split([',', ' ']).next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (OwnServer { child, _data: data }, address)
}

/// One request a worker makes: who sends it, and the answer that means success.
struct Call {
    method: Method,
    path: String,
    body: Bytes,
    expected: StatusCode,
    /// Sent with the agent's access token (claims, log fragments).
    as_agent: bool,
}

#[derive(Clone)]
struct Target {
    address: String,
    /// An access token of a client with role agent.
    agent_token: Option<String>,
}

impl Target {
    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        sender
    }
}

async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    call: &Call,
) -> (StatusCode, Bytes) {
    sender.ready().await.expect("connection ready");
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(&call.path)
        .header("host", &target.address)
        .header("content-type", "application/json")
        .header("cookie", "agent_name=bench-agent");
    if let (true, Some(token)) = (call.as_agent, &target.agent_token) {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    exchange(sender, request.body(Full::new(call.body.clone())).unwrap()).await
}

/// A `GET` an agent makes, answered with `expected` when all is well.
fn agent_get(path: &str, expected: StatusCode) -> Call {
    Call {
        method: Method::GET,
        path: path.to_string(),
        body: Bytes::new(),
        expected,
        as_agent: true,
    }
}

/// Sends one request on the connection and reads the whole answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> (StatusCode, Bytes) {
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

struct Figures {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn report(mut self, name: &str, extra: &str) {
        self.latencies_us.sort_unstable();
        let at = |q: f64| {
            let index = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
            self.latencies_us.get(index).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "{name:<28} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests in {:.1} s){extra}",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            self.requests,
            self.elapsed.as_secs_f64()
        );
    }
}

/// Runs `connections` loops of `step` until `deadline` or until a step returns false.
async fn drive<F, Fut>(target: &Target, connections: usize, duration: Duration, step: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Option<Call>>,
{
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (target, step, stop, total) =
            (target.clone(), step.clone(), stop.clone(), total.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut sender = target.connect().await;
            let mut latencies = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                let Some(request) = step(worker, n).await else {
                    break;
                };
                let sent = Instant::now();
                let (status, answer) = call(&mut sender, &target, &request).await;
                latencies.push(sent.elapsed().as_micros() as u32);
                if status != request.expected {
                    // The end of the work (e.g. the queue ran dry): stop everyone.
                    if status == StatusCode::NO_CONTENT {
                        stop.store(true, Ordering::Relaxed);
                        latencies.pop();
                        break;
                    }
                    panic!(
                        "{}: expected {}, got {status}: {}",
                        request.path,
                        request.expected,
                        String::from_utf8_lossy(&answer)
                    );
                }
                n += 1;
            }
            total.fetch_add(n, Ordering::Relaxed);
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("worker"));
    }
    Figures {
        requests: total.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies_us,
    }
}

fn job_body(queue: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"job_queue": "{queue}", "name": "bench", "tags": ["bench"], "test_data": {{"test_cmds": "echo hello"}}}}"#
    ))
}

async fn run(options: Options, target: Target) {
    let wanted = |figure: &str| {
        options
            .only
            .as_deref()
            .is_none_or(|only| figure.starts_with(only))
    };
    let duration = Duration::from_secs_f64(options.seconds);
    let connections = options.connections;
    let run_id = std::process::id() as usize;

    if wanted("submit") || wanted("claim") {
        let queue = format!("bench-submit-{run_id}");
        let body = job_body(&queue);
        let submits = drive(&target, connections, duration, move |_, _| {
            let body = body.clone();
            async move {
                Some(Call {
                    method: Method::POST,
                    path: "/v1/job".into(),
                    body,
                    expected: StatusCode::OK,
                    as_agent: false,
                })
            }
        })
        .await;
        let submitted = submits.requests;
        submits.report("submit (POST /v1/job)", "");
        if wanted("claim") {
            let path = format!("/v1/job?queue={queue}");
            let claims = drive(
                &target,
                connections,
                Duration::from_secs(3600),
                move |_, _| {
                    let call = agent_get(&path, StatusCode::OK);
                    async move { Some(call) }
                },
            )
            .await;
            let claimed = claims.requests;
            claims.report(
                "claim (GET /v1/job)",
                &format!("  claimed {claimed} of {submitted}"),
            );
        }
    }

    if wanted("poll") {
        let path = format!("/v1/job?queue=bench-empty-{run_id}");
        let polls = drive(&target, connections, duration, move |_, _| {
            let call = agent_get(&path, StatusCode::NO_CONTENT);
            async move { Some(call) }
        })
        .await;
        polls.report("empty-queue poll", "");
    }

    if wanted("fragments") {
        let sizes = options
            .fragment_bytes
            .map_or(vec![256, 16384], |size| vec![size]);
        let mut batches = vec![1];
        if options.fragment_batch > 1 {
            batches.push(options.fragment_batch);
        }
        let rounds: Vec<(usize, usize)> = batches
            .iter()
            .flat_map(|&batch| sizes.iter().map(move |&size| (size, batch)))
            .collect();
        for (round, (size, batch)) in rounds.into_iter().enumerate() {
            let run = run_id * 10 + round;
            fragment_ingest(&target, connections, duration, size, batch, run).await;
        }
    }
}

/// Posts `size`-byte fragments of 80-column log lines, one job per connection, `batch`
/// fragments per request (a JSON array to the batch path when more than one).
async fn fragment_ingest(
    target: &Target,
    connections: usize,
    duration: Duration,
    size: usize,
    batch: usize,
    run: usize,
) {
    let line = "x".repeat(79) + "\\n";
    let log_data: String = line.repeat(size / 80 + 1)[..size / 80 * 81].to_string();
    let figures = drive(target, connections, duration, move |worker, n| {
        let log_data = log_data.clone();
        async move {
            let job = format!("00000000-0000-4000-8000-{:012}", run * 1000 + worker);
            let fragment = |number: usize| {
                format!(
                    r#"{{"fragment_number": {number}, "timestamp": "2026-01-01T00:00:00", "phase": "test", "log_data": "{log_data}"}}"#
                )
            };
            let (path, body) = if batch == 1 {
                (format!("/v1/result/{job}/log/output"), fragment(n))
            } else {
                let fragments: Vec<String> = (n * batch..(n + 1) * batch).map(fragment).collect();
                let body = format!("[{}]", fragments.join(","));
                (format!("/v1/result/{job}/log/output/batch"), body)
            };
            Some(Call {
                method: Method::POST,
                path,
                body: Bytes::from(body),
                expected: StatusCode::OK,
                as_agent: true,
            })
        }
    })
    .await;
    let text_bytes = size / 80 * 80;
    let seconds = figures.elapsed.as_secs_f64();
    let fragments = (figures.requests * batch) as f64 / seconds;
    let megabytes = fragments * text_bytes as f64 / 1e6;
    let name = if batch == 1 {
        format!("log fragments ({text_bytes} B)")
    } else {
        format!("log batches ({batch} × {text_bytes} B)")
    };
    figures.report(
        &name,
        &format!("  {fragments:.0} fragments/s, {megabytes:.0} MB/s of log text"),
    );
}

/// An access token for `CLIENT_ID:SECRET` from `POST /v1/oauth2/token`.
async fn login(target: &Target, credentials: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut sender = target.connect().await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/oauth2/token")
        .header("host", &target.address)
        .header("authorization", format!("Basic {basic}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = exchange(&mut sender, request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "login failed: {}",
        String::from_utf8_lossy(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn main() {
    let mut options = options();
    let (_own, address) = match &options.url {
        Some(url) => (None, url.trim_start_matches("http://").to_string()),
        None => {
            let (server, address) = start_own_server();
            options.agent = Some(OWN_AGENT.to_string());
            (Some(server), address)
        }
    };
    println!(
        "load against http://{address}: {} connections, {} s per figure",
        options.connections, options.seconds
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let mut target = Target {
            address,
            agent_token: None,
        };
        if let Some(credentials) = &options.agent {
            target.agent_token = Some(login(&target, credentials).await);
        }
        run(options, target).await
    });
}
