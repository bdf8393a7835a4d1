//! `tf demo`: a whole lab on this machine in a few seconds. It starts `tf serve` on a
//! temporary data dir and a free port, a `tf agent` whose phases run on this machine,
//! submits a small job with an attachment (the test script) that leaves an artifact,
//! follows its output live, prints the results, and stops everything, leaving no file
//! behind. With `--keep` the lab stays up until Ctrl-C, for the user to try it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::v1;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Also save the job's artifacts tarball to this file
    #[arg(long, value_name = "FILE")]
    pub artifacts: Option<PathBuf>,
    /// Keep the lab running after the job, until Ctrl-C, to try its web pages and the
    /// client commands on it
    #[arg(long)]
    pub keep: bool,
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
    // The demo's client keeps its history and tokens to itself, and ignores the user's
    // credentials for other servers.
    std::env::set_var("XDG_CONFIG_HOME", home.path().join("config"));
    for variable in [
        "TESTFLINGER_SERVER",
        "TESTFLINGER_CLIENT_ID",
        "TESTFLINGER_SECRET_KEY",
    ] {
        std::env::remove_var(variable);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let stopped = tokio::select! {
            outcome = demo(&args, home.path()) => return outcome,
            // The lab (inside `demo`) is stopped as its future is dropped.
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = terminate.recv() => "terminated",
        };
        // How `--keep` ends; without it, the demo was cut short.
        if args.keep {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{stopped}"))
        }
    });
    let path = home.path().to_path_buf();
    home.close()
        .with_context(|| format!("cannot remove {}", path.display()))?;
    if args.keep && outcome.is_ok() {
        println!("\nStopped the lab and removed its files.");
    }
    outcome
}

/// The lab, its job, and with `--keep` the wait for Ctrl-C.
async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let tf = std::env::current_exe().context("cannot find the tf binary")?;
    println!("tf demo: a lab server, an agent and a job, all on this machine");
    let mut running = Running(Vec::new());
    let data = dir.join("server");
    let token_file = dir.join("agent-token.json");
    let added = Command::new(&tf)
        .args(["clients", "--data-dir"])
        .arg(&data)
        .args(["add", "demo-agent", "--role", "agent", "--token-file"])
        .arg(&token_file)
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
    let server_log = dir.join("server.log");
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
            &server_log,
        )?,
    ));
    wait_for_server(&server_url, &server_log).await?;
    println!("  server   {server_url}  (log: {})", server_log.display());

    let config = dir.join("testflinger-agent.conf");
    std::fs::write(&config, agent_config(dir, &server_url))?;
    let agent_log = dir.join("agent.log");
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
            &agent_log,
        )?,
    ));
    wait_for_agent(&server_url, &agent_log).await?;
    println!(
        "  agent    demo-agent on queue 'demo'  (log: {})",
        agent_log.display()
    );

    let job_dir = dir.join("job");
    std::fs::create_dir_all(&job_dir)?;
    std::fs::write(job_dir.join("demo.sh"), TEST_SCRIPT)?;
    let job_file = job_dir.join("job.yaml");
    std::fs::write(&job_file, JOB)?;
    println!(
        "  job      {} (its test script is an attachment)\n",
        job_file.display()
    );
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(|| dir.join("artifacts.tgz"));
    let started = Instant::now();
    let job_id = crate::cli::demo_job(&server_url, &job_file, &artifacts).await?;
    let took = started.elapsed().as_secs_f64();
    if let Some(saved) = &args.artifacts {
        println!("  (saved to {})", saved.display());
    }
    if !args.keep {
        println!(
            "\nThe job went from submit to complete in {took:.1} s. Stopping the agent and the \
             server (tf demo --keep keeps them running, to try more)."
        );
        return Ok(());
    }
    println!(
        "\nThe job went from submit to complete in {took:.1} s. The lab keeps running; Ctrl-C \
         stops it and removes its files.\n\n  web pages  {server_url}/\n\nTry, in another terminal:\n\
         \n  export TESTFLINGER_SERVER={server_url}\n  tf submit --poll {}   # the same job again\n  \
         tf list-agents\n  tf status {job_id}\n  tf results {job_id}",
        job_file.display()
    );
    std::future::pending().await
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

async fn wait_for_server(url: &str, log: &Path) -> anyhow::Result<()> {
    let api = crate::api::Api::new(url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if api
            .call(v1::version(), Duration::from_secs(1))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the server did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// Waits until the agent is listed on the demo queue and waits for jobs: what `tf submit`
/// checks. (The agent reports itself waiting a moment before it names its queues.)
async fn wait_for_agent(url: &str, log: &Path) -> anyhow::Result<()> {
    let api = crate::api::Api::new(url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let listed = api.call(v1::queue_agents("demo"), Duration::from_secs(1));
        if let Ok(Value::Array(agents)) = listed.await {
            let waiting = |a: &Value| {
                a.get("name").and_then(Value::as_str) == Some("demo-agent")
                    && a.get("state").and_then(Value::as_str) == Some("waiting")
            };
            if agents.iter().any(waiting) {
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
