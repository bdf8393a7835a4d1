//! Load generator for tf and any Testflinger-compatible server.
//!
//!     cargo bench --bench load                       # the built tf against the yardstick
//!     cargo bench --bench load -- --tf A --compare B # two tf binaries and the yardstick
//!     cargo bench --bench load -- --url http://host:5000 --agent ID:SECRET
//!     cargo bench --bench load -- --postgres         # also tf on a PostgreSQL cluster
//!     cargo bench --bench load -- --database postgres://USER@HOST/DB  # ...on this one
//!
//! Measures job submission, job claims by concurrent agents (every job claimed exactly
//! once, checked), empty-queue polls and log fragment ingest, each as requests per second
//! with p50/p99 latency. Without `--url` it starts its own servers on temporary data dirs:
//! `tf serve` of `--tf` (default: the tf this bench was built with), of `--compare` if
//! given, and the yardstick (`load/yardstick.rs`, this executable re-run with
//! `--serve-yardstick`), each in its own process. Rates on shared machines move by tens of
//! percent from run to run, so the servers are measured in alternating rounds (tf,
//! yardstick; yardstick, tf; ...: each round starts with the next one, as going first costs
//! a few percent) and the closing table gives each one's rates and their
//! ratios: tf's share of the yardstick, and `--compare`'s of `--tf`. Each figure also
//! says how much CPU the whole machine spent per request meanwhile (`/proc/stat`):
//! steadier than the rates from run to run, it is the figure to compare for costs.
//!
//! With `--postgres` (a throwaway cluster of its own, started with PostgreSQL's durable
//! defaults: every commit flushed) or `--database URL` (an empty database), `--tf` is also
//! measured keeping its records in PostgreSQL ("tf-pg"), and on its own cluster pgbench's
//! insert-only rate (one INSERT per transaction, as many clients) is measured for scale.
//! With `--postgres` and `--compare`, `--compare` is measured on PostgreSQL too
//! ("compare-pg", a database of its own on the same cluster).
//!
//! With `--replicas N`, tf-pg is N `tf serve` replicas on its database (one data dir), the
//! connections spread over them in turn, and the wake-up figures are measured: how soon
//! a long-poll on one replica answers what another was told. compare-pg stays one
//! server, so `--compare` with the same binary shows what the replicas change. With
//! `--haproxy` too, every connection to tf-pg goes through HAProxy (`leastconn`, as in
//! `packaging/examples/ha/haproxy.cfg`), the wake-up figures included.
//!
//! Options: `--rounds N` (2), `--seconds S` per figure and round (5), `--connections N`
//! (32), `--only submit|claim|poll|fragments`, `--fragment-bytes N` (default: 256 and
//! 16384), `--fragment-batch N` (fragments per request in the batched rounds, on servers
//! that advertise tf's `log-batches`; 32, 1 for none). Every connection is one keep-alive HTTP/1.1 connection driven by a task on a
//! single-threaded runtime, so the generator itself uses at most one core.

// A crate root resolves `mod` beside itself; the yardstick sits in load/ so that cargo does
// not take it for a bench of its own.
#[path = "load/yardstick.rs"]
mod yardstick;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// The hidden argument that makes this executable the yardstick server.
const SERVE_YARDSTICK: &str = "--serve-yardstick";

struct Options {
    url: Option<String>,
    /// The tf binary to start (without `--url`).
    tf: PathBuf,
    /// A second tf binary, measured alternating with the first.
    compare: Option<PathBuf>,
    connections: usize,
    seconds: f64,
    rounds: usize,
    /// One fragment size instead of the default small and large rounds.
    fragment_bytes: Option<usize>,
    /// Fragments per request in the batched rounds (tf's `log-batches`); 1: none.
    fragment_batch: usize,
    /// Run only the figures whose name starts with this.
    only: Option<String>,
    /// `CLIENT_ID:SECRET` of an agent client on the `--url` server (claims and log
    /// fragments need role agent).
    agent: Option<String>,
    /// Also measure `--tf` on PostgreSQL: a throwaway cluster (`--postgres`) or this
    /// database (`--database URL`).
    postgres: Option<PostgresTarget>,
    /// How many `tf serve` replicas of tf-pg share its database (and data dir), the
    /// connections spread over them in turn.
    replicas: usize,
    /// Reach tf-pg's replicas through HAProxy (`--haproxy`), as a lab does.
    through_haproxy: bool,
}

enum PostgresTarget {
    OwnCluster,
    Database(String),
}

fn options() -> Options {
    let mut options = Options {
        url: None,
        tf: PathBuf::from(env!("CARGO_BIN_EXE_tf")),
        compare: None,
        connections: 32,
        seconds: 5.0,
        rounds: 2,
        fragment_bytes: None,
        fragment_batch: 32,
        only: None,
        agent: None,
        postgres: None,
        replicas: 1,
        through_haproxy: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => options.url = Some(value().trim_end_matches('/').to_string()),
            "--tf" => options.tf = PathBuf::from(value()),
            "--compare" => options.compare = Some(PathBuf::from(value())),
            "--connections" => options.connections = value().parse().expect("--connections N"),
            "--seconds" => options.seconds = value().parse().expect("--seconds S"),
            "--rounds" => options.rounds = value().parse().expect("--rounds N"),
            "--fragment-batch" => {
                options.fragment_batch = value().parse().expect("--fragment-batch N")
            }
            "--fragment-bytes" => {
                options.fragment_bytes = Some(value().parse().expect("--fragment-bytes N"))
            }
            "--only" => options.only = Some(value()),
            "--agent" => options.agent = Some(value()),
            "--postgres" => options.postgres = Some(PostgresTarget::OwnCluster),
            "--database" => options.postgres = Some(PostgresTarget::Database(value())),
            "--replicas" => options.replicas = value().parse().expect("--replicas N"),
            "--haproxy" => options.through_haproxy = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        options.url.is_none() || options.compare.is_none(),
        "--compare starts its own server; it cannot be combined with --url"
    );
    options
}

/// A server process of our own on a temporary data dir, killed when dropped.
struct OwnServer {
    child: Child,
    /// Shared by the replicas of one database.
    _data: Arc<tempfile::TempDir>,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent client the generator creates on its own tf servers.
const OWN_AGENT: &str = "bench-agent:bench-agent-secret-0123456789";

/// `tf serve` of `binary` on a fresh data dir, its records there (SQLite) or in the
/// PostgreSQL `database`, there as `replicas` servers sharing the data dir.
fn start_tf(
    binary: &Path,
    database: Option<&str>,
    replicas: usize,
) -> (Vec<OwnServer>, Vec<String>) {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let (agent, secret) = OWN_AGENT.split_once(':').unwrap();
    let secret_file = data.path().join("agent.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let tf = || {
        let mut command = Command::new(binary);
        match database {
            Some(url) => command.env("TF_DATABASE", url),
            None => command.env_remove("TF_DATABASE"),
        };
        command
    };
    let created = tf()
        .args(["clients", "--data-dir"])
        .arg(data.path())
        .args(["add", agent, "--role", "agent", "--secret-file"])
        .arg(&secret_file)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
    assert!(created.status.success(), "tf clients add failed");
    (0..replicas)
        .map(|_| {
            let mut serve = tf();
            serve
                .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
                .arg(data.path())
                .env("RUST_LOG", "info");
            start(serve, data.clone())
        })
        .unzip()
}

fn start_yardstick() -> (OwnServer, String) {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut serve = Command::new(std::env::current_exe().expect("own executable"));
    serve.arg(SERVE_YARDSTICK).arg(data.path());
    start(serve, data)
}

/// Starts `command`, a server that logs "listening on http://ADDRESS" on stderr.
fn start(mut command: Command, data: Arc<tempfile::TempDir>) -> (OwnServer, String) {
    use std::io::BufRead;
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("server exited").expect("read");
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
    /// The answer's body is kept for checking after the run (submitted and claimed ids).
    keep_answer: bool,
}

#[derive(Clone)]
struct Target {
    /// The server's address; several replicas of one server take connections in turn.
    addresses: Vec<String>,
    /// An access token of a client with role agent.
    agent_token: Option<String>,
}

impl Target {
    fn one(address: String) -> Target {
        Target {
            addresses: vec![address],
            agent_token: None,
        }
    }

    /// The `n`-th connection (to the `n`-th replica, in turn).
    async fn connect(&self, n: usize) -> SendRequest<Full<Bytes>> {
        let address = &self.addresses[n % self.addresses.len()];
        let stream = tokio::net::TcpStream::connect(address)
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

/// A server being measured.
struct Contender {
    name: String,
    target: Target,
    /// Serves the whole v1 API (the yardstick serves only submit and claim).
    is_tf: bool,
    /// Takes log fragments in batches (advertises `log-batches`).
    log_batches: bool,
    _processes: Vec<OwnServer>,
    /// HAProxy in front of the replicas (`--haproxy`), stopped after them.
    _proxy: Option<tf_test_support::haproxy::Haproxy>,
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
        .header("host", &target.addresses[0])
        .header("content-type", "application/json")
        .header("cookie", "agent_name=bench-agent");
    if let (true, Some(token)) = (call.as_agent, &target.agent_token) {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    exchange(sender, request.body(Full::new(call.body.clone())).unwrap()).await
}

/// A `GET` an agent makes, answered with `expected` when all is well.
fn agent_get(path: &str, expected: StatusCode, keep_answer: bool) -> Call {
    Call {
        method: Method::GET,
        path: path.to_string(),
        body: Bytes::new(),
        expected,
        as_agent: true,
        keep_answer,
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

#[derive(Default)]
struct Figures {
    requests: usize,
    elapsed: Duration,
    /// CPU time the whole machine spent meanwhile (server, database, generator and
    /// whatever else runs), where `/proc/stat` tells it.
    machine_cpu: Option<Duration>,
    latencies_us: Vec<u32>,
    /// The bodies of the answers to calls with `keep_answer`.
    answers: Vec<Bytes>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which a share `q` of the requests were answered, in ms.
    fn latency_ms(&mut self, q: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us.get(index).copied().unwrap_or(0) as f64 / 1000.0
    }

    /// The machine's CPU time per request, in µs: steadier from run to run than the rate
    /// on a shared machine, whose cores other tenants take in turns.
    fn machine_cpu_us(&self) -> Option<f64> {
        let cpu = self.machine_cpu?;
        (self.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / self.requests as f64)
    }

    fn report(&mut self, name: &str, extra: &str) {
        let cpu = self
            .machine_cpu_us()
            .map(|us| format!(", {us:.0} µs of CPU each"))
            .unwrap_or_default();
        println!(
            "{name:<40} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests in {:.1} s{cpu}){extra}",
            self.rate(),
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.requests,
            self.elapsed.as_secs_f64()
        );
    }

    /// Adds another round's figures: the rate becomes that of all rounds together.
    fn add(&mut self, round: Figures) {
        self.machine_cpu = match self.elapsed.is_zero() {
            true => round.machine_cpu,
            false => self.machine_cpu.zip(round.machine_cpu).map(|(a, b)| a + b),
        };
        self.requests += round.requests;
        self.elapsed += round.elapsed;
        self.latencies_us.extend(round.latencies_us);
    }
}

/// Runs `connections` loops of `step` until `deadline` or until a step returns false.
async fn drive<F, Fut>(target: &Target, connections: usize, duration: Duration, step: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Option<Call>>,
{
    let started = Instant::now();
    let cpu_before = machine_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (target, step, stop, total) =
            (target.clone(), step.clone(), stop.clone(), total.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut sender = target.connect(worker).await;
            let mut latencies = Vec::new();
            let mut answers = Vec::new();
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
                if request.keep_answer {
                    answers.push(answer);
                }
                n += 1;
            }
            total.fetch_add(n, Ordering::Relaxed);
            (latencies, answers)
        }));
    }
    let mut figures = Figures::default();
    for task in tasks {
        let (latencies, answers) = task.await.expect("worker");
        figures.latencies_us.extend(latencies);
        figures.answers.extend(answers);
    }
    figures.requests = total.load(Ordering::Relaxed);
    figures.elapsed = started.elapsed();
    figures.machine_cpu = machine_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    figures
}

/// The CPU time all cores of the machine have spent busy since boot (user, nice, system,
/// interrupts), from `/proc/stat`; `None` where there is none.
fn machine_cpu() -> Option<Duration> {
    // The kernel counts in clock ticks of USER_HZ, 100 a second on Linux.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user, nice, system, idle, iowait, irq, softirq: the busy ones.
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    Some(Duration::from_millis(busy * 1000 / TICKS_PER_SECOND))
}

fn job_body(queue: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"job_queue": "{queue}", "name": "bench", "tags": ["bench"], "test_data": {{"test_cmds": "echo hello"}}}}"#
    ))
}

/// The figures of one round of one contender: (figure name, figures, remark).
type Measured = Vec<(String, Figures, String)>;

/// What is measured together: submits then the claims of the submitted jobs, empty polls,
/// log fragments of one size.
#[derive(Clone, Copy)]
enum Unit {
    SubmitAndClaim {
        claims: bool,
    },
    EmptyPoll,
    Fragments {
        size: usize,
        batch: usize,
    },
    /// How soon what one replica is told wakes a long-poll on another.
    WakeupAcrossReplicas,
}

impl Unit {
    fn all(options: &Options) -> Vec<Unit> {
        let wanted = |figure: &str| {
            options
                .only
                .as_deref()
                .is_none_or(|only| figure.starts_with(only))
        };
        let mut units = Vec::new();
        if wanted("submit") || wanted("claim") {
            units.push(Unit::SubmitAndClaim {
                claims: wanted("claim"),
            });
        }
        if wanted("poll") {
            units.push(Unit::EmptyPoll);
        }
        if wanted("fragments") {
            let sizes = options.fragment_bytes.map_or(vec![256, 16384], |s| vec![s]);
            let mut batches = vec![1];
            if options.fragment_batch > 1 {
                batches.push(options.fragment_batch);
            }
            for batch in batches {
                units.extend(sizes.iter().map(|&size| Unit::Fragments { size, batch }));
            }
        }
        if wanted("wake-up") && options.replicas > 1 {
            units.push(Unit::WakeupAcrossReplicas);
        }
        units
    }

    /// The yardstick serves the job queue only; batches need a server that takes them.
    fn applies_to(self, contender: &Contender) -> bool {
        match self {
            Unit::Fragments { batch, .. } => {
                contender.is_tf && (batch == 1 || contender.log_batches)
            }
            Unit::WakeupAcrossReplicas => contender.target.addresses.len() > 1,
            _ => true,
        }
    }

    /// One round; `tag` keeps the queues and jobs of each round apart.
    async fn measure(self, target: &Target, options: &Options, tag: usize) -> Measured {
        let duration = Duration::from_secs_f64(options.seconds);
        match self {
            Unit::SubmitAndClaim { claims } => {
                submit_and_claim(target, options.connections, duration, claims, tag).await
            }
            Unit::EmptyPoll => {
                let path = format!("/v1/job?queue=bench-empty-{tag}");
                let polls = drive(target, options.connections, duration, move |_, _| {
                    let call = agent_get(&path, StatusCode::NO_CONTENT, false);
                    async move { Some(call) }
                })
                .await;
                vec![("empty-queue poll".into(), polls, String::new())]
            }
            Unit::Fragments { size, batch } => {
                let connections = options.connections;
                vec![fragment_ingest(target, connections, duration, size, batch, tag).await]
            }
            Unit::WakeupAcrossReplicas => wakeups_across_replicas(target, duration, tag).await,
        }
    }
}

/// One at a time for `duration`: a long-poll waits on the second replica while the first
/// is told something (a job submitted, a log line stored), timed from that request being
/// sent to the long-poll's answer. Latencies, not rates: the requests are sequential.
async fn wakeups_across_replicas(target: &Target, duration: Duration, tag: usize) -> Measured {
    let (mut told, mut waiting) = (target.connect(0).await, target.connect(1).await);
    let log_job = {
        let body = job_body(&format!("bench-followed-{tag}"));
        let (_, answer) = call(&mut told, target, &post("/v1/job", body, false)).await;
        job_ids(&[answer]).into_iter().next().expect("a job id")
    };
    let (mut claims, mut follows) = (Figures::default(), Figures::default());
    let started = Instant::now();
    for n in 0.. {
        if started.elapsed() > duration {
            break;
        }
        let queue = format!("bench-wake-{tag}-{n}");
        let claim = agent_get(
            &format!("/v1/job?queue={queue}&wait=30"),
            StatusCode::OK,
            false,
        );
        let submit = post("/v1/job", job_body(&queue), false);
        claims
            .latencies_us
            .push(woken_after(target, &mut waiting, &claim, &mut told, &submit).await);
        // Followed as a user (`tf poll`): logs are not the agent's to read.
        let follow = Call {
            as_agent: false,
            ..agent_get(
                &format!("/v1/result/{log_job}/log/output?start_fragment={n}&wait=30"),
                StatusCode::OK,
                false,
            )
        };
        let line = format!(
            r#"{{"fragment_number": {n}, "timestamp": "2026-01-01T00:00:00", "phase": "test", "log_data": "line {n}\n"}}"#
        );
        let store = post(
            &format!("/v1/result/{log_job}/log/output"),
            line.into(),
            true,
        );
        follows
            .latencies_us
            .push(woken_after(target, &mut waiting, &follow, &mut told, &store).await);
    }
    for figures in [&mut claims, &mut follows] {
        figures.requests = figures.latencies_us.len();
        figures.elapsed = started.elapsed();
    }
    let remark = "  (sequential: read the latencies)".to_string();
    vec![
        ("wake-up: submit→claim".into(), claims, remark.clone()),
        ("wake-up: log→follower".into(), follows, remark),
    ]
}

/// A `POST` of `body`, as a user or (`as_agent`) as the agent.
fn post(path: &str, body: Bytes, as_agent: bool) -> Call {
    Call {
        method: Method::POST,
        path: path.into(),
        body,
        expected: StatusCode::OK,
        as_agent,
        keep_answer: false,
    }
}

/// Starts `long_poll` on `waiting`, sends `tell` on `told` once the poll has had time to
/// be waiting, and gives the microseconds from `tell` sent to the poll answered.
async fn woken_after(
    target: &Target,
    waiting: &mut SendRequest<Full<Bytes>>,
    long_poll: &Call,
    told: &mut SendRequest<Full<Bytes>>,
    tell: &Call,
) -> u32 {
    let polled = call(waiting, target, long_poll);
    tokio::pin!(polled);
    // The poll reaches its server, finds nothing and waits meanwhile.
    let settle = tokio::time::sleep(Duration::from_millis(20));
    tokio::select! {
        (status, body) = &mut polled => panic!("the long-poll answered at once: {status} {body:?}"),
        _ = settle => {}
    }
    let sent = Instant::now();
    let (status, body) = call(told, target, tell).await;
    assert_eq!(status, tell.expected, "{}: {body:?}", tell.path);
    let (status, body) = polled.await;
    assert_eq!(status, long_poll.expected, "{}: {body:?}", long_poll.path);
    sent.elapsed().as_micros() as u32
}

/// Submits for `duration`, then claims with all connections until the queue is empty,
/// checking that every submitted job was handed out exactly once.
async fn submit_and_claim(
    target: &Target,
    connections: usize,
    duration: Duration,
    claims: bool,
    tag: usize,
) -> Measured {
    let queue = format!("bench-submit-{tag}");
    let body = job_body(&queue);
    let submits = drive(target, connections, duration, move |_, _| {
        let body = body.clone();
        async move {
            Some(Call {
                method: Method::POST,
                path: "/v1/job".into(),
                body,
                expected: StatusCode::OK,
                as_agent: false,
                keep_answer: claims,
            })
        }
    })
    .await;
    let mut measured = vec![("submit (POST /v1/job)".into(), submits, String::new())];
    if !claims {
        return measured;
    }
    let path = format!("/v1/job?queue={queue}");
    let mut claimed = drive(target, connections, Duration::MAX, move |_, _| {
        let call = agent_get(&path, StatusCode::OK, true);
        async move { Some(call) }
    })
    .await;
    let submitted = job_ids(&std::mem::take(&mut measured[0].1.answers));
    let handed_out = job_ids(&std::mem::take(&mut claimed.answers));
    assert_eq!(
        handed_out.len(),
        claimed.requests,
        "a job was handed out twice"
    );
    assert_eq!(
        handed_out, submitted,
        "the jobs handed out are not the jobs submitted"
    );
    let remark = format!(
        "  claimed {} of {}, each once",
        claimed.requests,
        submitted.len()
    );
    measured.push(("claim (GET /v1/job)".into(), claimed, remark));
    measured
}

/// The `job_id`s of submit or claim answers.
fn job_ids(answers: &[Bytes]) -> HashSet<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        job_id: String,
    }
    answers
        .iter()
        .map(|answer| {
            serde_json::from_slice::<WithId>(answer)
                .expect("an answer with a job_id")
                .job_id
        })
        .collect()
}

/// Posts `size`-byte fragments of 80-column log lines, one job per connection, `batch`
/// fragments per request (a JSON array to the batch path when more than one).
async fn fragment_ingest(
    target: &Target,
    connections: usize,
    duration: Duration,
    size: usize,
    batch: usize,
    tag: usize,
) -> (String, Figures, String) {
    let line = "x".repeat(79) + "\\n";
    let log_data: String = line.repeat(size / 80 + 1)[..size / 80 * 81].to_string();
    let figures = drive(target, connections, duration, move |worker, n| {
        let log_data = log_data.clone();
        async move {
            let job = format!("00000000-0000-4000-8000-{:012}", tag * 1000 + worker);
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
                keep_answer: false,
            })
        }
    })
    .await;
    let text_bytes = size / 80 * 80;
    let fragments = figures.rate() * batch as f64;
    let megabytes = fragments * text_bytes as f64 / 1e6;
    let name = if batch == 1 {
        format!("log fragments ({text_bytes} B)")
    } else {
        format!("log batches ({batch} × {text_bytes} B)")
    };
    (
        name,
        figures,
        format!("  {fragments:.0} fragments/s, {megabytes:.0} MB/s of log text"),
    )
}

/// Every round's figures, by figure and contender, in the order first measured.
struct Table {
    rounds: usize,
    contenders: Vec<String>,
    rows: Vec<(String, Vec<Option<Figures>>)>,
}

impl Table {
    fn add(&mut self, figure: String, contender: usize, figures: Figures) {
        let row = match self.rows.iter().position(|(name, _)| *name == figure) {
            Some(row) => row,
            None => {
                let empty = self.contenders.iter().map(|_| None).collect();
                self.rows.push((figure, empty));
                self.rows.len() - 1
            }
        };
        self.rows[row].1[contender]
            .get_or_insert_with(Figures::default)
            .add(figures);
    }

    /// Each contender's rate and latencies over all rounds, then the ratios of the rates:
    /// every tf to the yardstick, and the second tf to the first.
    fn print(mut self) {
        let yardstick = self.contenders.iter().position(|name| name == "yardstick");
        let mut ratios: Vec<(usize, usize)> = (0..self.contenders.len())
            .filter(|&c| Some(c) != yardstick)
            .filter_map(|c| Some((c, yardstick?)))
            .collect();
        let index = |name: &str| self.contenders.iter().position(|n| n == name);
        for (other, base) in [("compare", "tf"), ("tf-pg", "tf"), ("compare-pg", "tf-pg")] {
            if let (Some(other), Some(base)) = (index(other), index(base)) {
                ratios.push((other, base));
            }
        }
        let headers: Vec<String> = ratios
            .iter()
            .map(|&(a, b)| format!("{}/{}", self.contenders[a], self.contenders[b]))
            .collect();
        let rounds = match self.rounds {
            1 => "1 round".to_string(),
            n => format!("{n} rounds"),
        };
        print!("\n{rounds:<28}");
        for name in &self.contenders {
            print!(
                " | {name:>9} {:>7} {:>7} {:>6}",
                "p50 ms", "p99 ms", "cpu µs"
            );
        }
        for header in &headers {
            print!(" | {header}");
        }
        println!();
        for (figure, cells) in &mut self.rows {
            print!("{figure:<28}");
            for cell in cells.iter_mut() {
                match cell {
                    Some(f) => print!(
                        " | {:>7.0}/s {:>7.2} {:>7.2} {:>6}",
                        f.rate(),
                        f.latency_ms(0.5),
                        f.latency_ms(0.99),
                        f.machine_cpu_us()
                            .map_or("-".to_string(), |us| format!("{us:.0}"))
                    ),
                    None => print!(" | {:>9} {:>7} {:>7} {:>6}", "-", "-", "-", "-"),
                }
            }
            for (&(a, b), header) in ratios.iter().zip(&headers) {
                let share = match (&cells[a], &cells[b]) {
                    (Some(a), Some(b)) => format!("{:.0}%", 100.0 * a.rate() / b.rate()),
                    _ => "-".into(),
                };
                print!(" | {share:>width$}", width = header.len());
            }
            println!();
        }
    }
}

async fn run(options: &Options, contenders: Vec<Contender>) {
    let mut table = Table {
        rounds: options.rounds,
        contenders: contenders.iter().map(|c| c.name.clone()).collect(),
        rows: Vec::new(),
    };
    let run_id = std::process::id() as usize;
    for (unit_index, unit) in Unit::all(options).into_iter().enumerate() {
        for round in 0..options.rounds {
            // Each round starts with the next contender: whoever goes first in a round
            // was measured up to 15% slower than the same binary going second.
            let taking_part: Vec<_> = contenders
                .iter()
                .enumerate()
                .filter(|(_, contender)| unit.applies_to(contender))
                .collect();
            let in_turn = taking_part
                .iter()
                .cycle()
                .skip(round)
                .take(taking_part.len());
            for &(index, contender) in in_turn {
                // Small enough for the last 12 digits of a job id (see `fragment_ingest`).
                let tag = (run_id % 100_000) * 1000 + unit_index * 100 + round % 100;
                for (figure, mut figures, remark) in
                    unit.measure(&contender.target, options, tag).await
                {
                    let name = format!("{figure}, {} #{}", contender.name, round + 1);
                    figures.report(&name, &remark);
                    table.add(figure, index, figures);
                }
                // The last server's background work (WAL checkpoints) ends before the
                // next one is measured.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    table.print();
}

/// An access token for `CLIENT_ID:SECRET` from `POST /v1/oauth2/token`.
async fn login(target: &Target, credentials: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut sender = target.connect(0).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/oauth2/token")
        .header("host", &target.addresses[0])
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

/// Whether the server names `extension` in the `tf-extensions` header of `GET /v1`.
async fn advertises(target: &Target, extension: &str) -> bool {
    let mut sender = target.connect(0).await;
    sender.ready().await.expect("connection ready");
    let request = Request::builder()
        .uri("/v1")
        .header("host", &target.addresses[0])
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let extensions = response.headers().get("tf-extensions");
    let extensions = extensions
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    extensions.split(',').any(|name| name.trim() == extension)
}

/// The servers to measure, started and logged in to; `database` is the PostgreSQL
/// database of "tf-pg".
async fn contenders(options: &Options, databases: &[String]) -> Vec<Contender> {
    let tf = |name: &str, processes: Vec<OwnServer>, addresses: Vec<String>| Contender {
        name: name.to_string(),
        target: Target {
            addresses,
            agent_token: None,
        },
        is_tf: true,
        log_batches: false,
        _processes: processes,
        _proxy: None,
    };
    // Starts `binary` as the contender `name` on `database` (or SQLite), and says so.
    let started = |name: &str, binary: &Path, database: Option<&String>| {
        let replicas = if name == "tf-pg" { options.replicas } else { 1 };
        let (processes, addresses) = start_tf(binary, database.map(String::as_str), replicas);
        let on = database.map(|url| format!(" on {url}")).unwrap_or_default();
        println!(
            "{name}: {}{on} at {}",
            binary.display(),
            addresses.join(", ")
        );
        tf(name, processes, addresses)
    };
    let mut contenders = Vec::new();
    if let Some(url) = &options.url {
        let address = url.trim_start_matches("http://").to_string();
        contenders.push(tf("server", Vec::new(), vec![address]));
    } else {
        contenders.push(started("tf", &options.tf, None));
        if let Some(url) = databases.first() {
            let mut replicas = started("tf-pg", &options.tf, Some(url));
            if options.through_haproxy {
                let addresses: Vec<&str> = replicas
                    .target
                    .addresses
                    .iter()
                    .map(String::as_str)
                    .collect();
                let proxy = tf_test_support::haproxy::Haproxy::start(&addresses);
                println!("tf-pg through HAProxy at {}", proxy.address);
                // As many addresses as replicas: the wake-up figures' two connections
                // are two of HAProxy's.
                replicas.target.addresses = vec![proxy.address.clone(); addresses.len()];
                replicas._proxy = Some(proxy);
            }
            contenders.push(replicas);
        }
        if let Some(binary) = &options.compare {
            contenders.push(started("compare", binary, None));
            if let Some(url) = databases.get(1) {
                contenders.push(started("compare-pg", binary, Some(url)));
            }
        }
    }
    let credentials = options
        .agent
        .as_deref()
        .or(options.url.is_none().then_some(OWN_AGENT));
    if let Some(credentials) = credentials {
        for contender in &mut contenders {
            contender.target.agent_token = Some(login(&contender.target, credentials).await);
            contender.log_batches = advertises(&contender.target, "log-batches").await;
        }
    }
    if options.url.is_none() {
        let (process, address) = start_yardstick();
        println!("yardstick: {SERVE_YARDSTICK} at {address}");
        contenders.push(Contender {
            name: "yardstick".into(),
            // The same requests, token included (ignored), as tf gets.
            target: Target {
                agent_token: contenders[0].target.agent_token.clone(),
                ..Target::one(address)
            },
            is_tf: false,
            log_batches: false,
            _processes: vec![process],
            _proxy: None,
        });
    }
    contenders
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE_YARDSTICK) {
        let data_dir = args.get(2).expect("--serve-yardstick DATA_DIR");
        return yardstick::serve(Path::new(data_dir));
    }
    let options = options();
    println!(
        "{} connections, {} s per figure and round, {} rounds",
        options.connections, options.seconds, options.rounds
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let cluster = matches!(options.postgres, Some(PostgresTarget::OwnCluster))
        .then(tf_test_support::postgres::Postgres::start_durable);
    // One database for tf-pg, and with --compare one for compare-pg (own cluster only).
    let databases: Vec<String> = match (&options.postgres, &cluster) {
        (Some(PostgresTarget::Database(url)), _) => vec![url.clone()],
        (_, Some(cluster)) => ["bench", "bench_compare"]
            .iter()
            .take(if options.compare.is_some() { 2 } else { 1 })
            .map(|name| cluster.create_database(name))
            .collect(),
        _ => Vec::new(),
    };
    local.block_on(&runtime, async {
        let contenders = contenders(&options, &databases).await;
        run(&options, contenders).await
    });
    if let Some(cluster) = &cluster {
        pgbench_inserts(cluster, &options);
    }
}

/// pgbench's rate of single-INSERT transactions on `cluster` (a database of its own), with
/// as many clients as the generator has connections: what the cluster itself commits.
fn pgbench_inserts(cluster: &tf_test_support::postgres::Postgres, options: &Options) {
    let url = cluster.create_database("pgbench");
    cluster.sql(
        "pgbench",
        "CREATE TABLE jobs (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                            queue TEXT NOT NULL, created_at BIGINT NOT NULL, job_data JSON NOT NULL)",
    );
    let script = tempfile::Builder::new()
        .suffix(".sql")
        .tempfile()
        .expect("temp file");
    std::fs::write(
        script.path(),
        "INSERT INTO jobs (queue, created_at, job_data) VALUES ('q', 0, '{\"job_queue\": \"q\"}');\n",
    )
    .expect("write the script");
    // pgbench may run as another user (root runs PostgreSQL's programs as postgres).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(script.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let clients = options.connections.to_string();
    let seconds = (options.seconds.ceil() as u64).max(1).to_string();
    let path = script.path().to_string_lossy().into_owned();
    let said = cluster.pgbench(
        &url,
        &[
            "--no-vacuum",
            "-n",
            "-f",
            &path,
            "-c",
            &clients,
            "-j",
            "2",
            "-T",
            &seconds,
        ],
    );
    let tps = said
        .lines()
        .find(|line| line.starts_with("tps = "))
        .unwrap_or("tps = ? (pgbench printed no rate)");
    println!("pgbench, {clients} clients, one INSERT per transaction: {tps}");
}
