//! `tf demo`: a whole lab on this machine in a few seconds. It starts `tf serve` on a
//! temporary data dir and a free port, a `tf agent` whose phases run on this machine,
//! submits a small job with an attachment (the test script) that leaves an artifact,
//! follows its output live, prints the results, and stops everything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to save the job's artifacts tarball [default: a file in the temp directory]
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
}

const TEST_SCRIPT: &str = r#"echo "Hello from the test phase, running on $(hostname)"
echo "Kernel: $(uname -sr)"
mkdir -p artifacts
uname -a > artifacts/uname.txt
echo "Saved artifacts/uname.txt"
"#;

const JOB: &str = r#"job_queue: demo
test_data:
  test_cmds: sh attachments/test/demo.sh
  attachments:
    - local: demo.sh
"#;

/// Child processes that are stopped (SIGTERM, then waited for) however the demo ends.
struct Running(Vec<(String, Child)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            // SAFETY: kill only sends a signal to our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for (_, child) in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let home = tempfile::Builder::new().prefix("tf-demo-").tempdir()?;
    let dir = home.path();
    let tf = std::env::current_exe().context("cannot find the tf binary")?;
    // The demo's client keeps its history and tokens to itself, and ignores the user's
    // credentials for other servers.
    std::env::set_var("XDG_CONFIG_HOME", dir.join("config"));
    for variable in [
        "TESTFLINGER_SERVER",
        "TESTFLINGER_CLIENT_ID",
        "TESTFLINGER_SECRET_KEY",
    ] {
        std::env::remove_var(variable);
    }

    println!(
        "tf demo: a lab server, an agent and a job, all on this machine ({})",
        dir.display()
    );
    let mut running = Running(Vec::new());
    let data = dir.join("server");
    let secret = dir.join("agent.secret");
    std::fs::write(&secret, random_secret())?;
    let added = Command::new(&tf)
        .args(["clients", "--data-dir"])
        .arg(&data)
        .args(["add", "demo-agent", "--role", "agent", "--secret-file"])
        .arg(&secret)
        .stdout(Stdio::null())
        .output()?;
    if !added.status.success() {
        bail!(
            "cannot create the agent's client: {}",
            String::from_utf8_lossy(&added.stderr)
        );
    }

    let port = free_port()?;
    let server_url = format!("http://127.0.0.1:{port}");
    running.0.push((
        "tf serve".into(),
        spawn(
            &tf,
            &[
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                &path_text(&data),
            ],
            &dir.join("server.log"),
        )?,
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wait_for_server(&server_url, &dir.join("server.log")))?;
    println!(
        "  server   {server_url}  (log: {})",
        dir.join("server.log").display()
    );

    let refresh_token =
        runtime.block_on(agent_token(&server_url, &std::fs::read_to_string(&secret)?))?;
    let token_file = dir.join("agent-token.json");
    std::fs::write(
        &token_file,
        json!({"refresh_token": refresh_token}).to_string(),
    )?;
    let config = dir.join("testflinger-agent.conf");
    std::fs::write(&config, agent_config(dir, &server_url))?;
    running.0.push((
        "tf agent".into(),
        spawn(
            &tf,
            &[
                "agent",
                "-c",
                &path_text(&config),
                "--token-file",
                &path_text(&token_file),
            ],
            &dir.join("agent.log"),
        )?,
    ));
    runtime.block_on(wait_for_agent(&server_url, &dir.join("agent.log")))?;
    println!(
        "  agent    demo-agent on queue 'demo'  (log: {})",
        dir.join("agent.log").display()
    );

    let job_dir = dir.join("job");
    std::fs::create_dir_all(&job_dir)?;
    std::fs::write(job_dir.join("demo.sh"), TEST_SCRIPT)?;
    std::fs::write(job_dir.join("job.yaml"), JOB)?;
    println!(
        "  job      {} (its test script is an attachment)\n",
        job_dir.join("job.yaml").display()
    );
    let artifacts = args
        .artifacts
        .unwrap_or_else(|| std::env::temp_dir().join(format!("tf-demo-artifacts-{port}.tgz")));
    let started = Instant::now();
    runtime.block_on(crate::cli::demo_job(
        &server_url,
        &job_dir.join("job.yaml"),
        &artifacts,
    ))?;
    println!(
        "\nThe job went from submit to complete in {:.1} s. Stopping the agent and the server.",
        started.elapsed().as_secs_f64()
    );
    drop(running);
    Ok(())
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn spawn(tf: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::File::create(log)?;
    Command::new(tf)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot start tf {}", args[0]))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_for_server(url: &str, log: &Path) -> anyhow::Result<()> {
    let api = crate::api::Api::new(url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if api.get("/v1", Duration::from_secs(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the server did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// Waits until the agent has registered and waits for jobs.
async fn wait_for_agent(url: &str, log: &Path) -> anyhow::Result<()> {
    let api = crate::api::Api::new(url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(reply) = api
            .get("/v1/agents/data/demo-agent", Duration::from_secs(1))
            .await
        {
            let record: Value = reply.json().unwrap_or(Value::Null);
            if record.get("state").and_then(Value::as_str) == Some("waiting") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the agent did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// A refresh token for the demo agent, as `POST /v1/oauth2/token` gives it.
async fn agent_token(url: &str, secret: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let api = crate::api::Api::new(url)?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("demo-agent:{secret}"));
    let reply = api
        .send_authorized(
            hyper::Method::POST,
            "/v1/oauth2/token",
            &format!("Basic {basic}"),
            crate::api::RequestBody::Empty,
            Duration::from_secs(10),
        )
        .await?;
    reply
        .json::<Value>()
        .ok()
        .and_then(|v| v.get("refresh_token")?.as_str().map(str::to_string))
        .context("the server gave the demo agent no token")
}

fn agent_config(dir: &Path, server_url: &str) -> String {
    let path = |name: &str| path_text(&dir.join(name));
    format!(
        "agent_id: demo-agent
server_address: {server_url}
job_queues: [demo]
advertised_queues: {{demo: The tf demo queue}}
polling_interval: 5
logging_quiet: true
execution_basedir: {}
logging_basedir: {}
results_basedir: {}
setup_command: 'echo \"Setting up. The device of this demo is this machine, $(uname -n).\"'
test_command: sh attachments/test/demo.sh
cleanup_command: echo Cleaning up
",
        path("run"),
        path("logs"),
        path("results")
    )
}
