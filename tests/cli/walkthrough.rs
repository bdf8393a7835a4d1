//! The README's "A lab of your own, step by step", run as written: its shell blocks are
//! taken from README.md itself, so the walkthrough cannot drift from what works. Each
//! block is one terminal: the server, then the agent's enrolment and the agent, then the
//! user's commands. Only the port is changed (to a free one) and `~` is a temporary home.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tf_test_support::wait::eventually;

const SECTION: &str = "## A lab of your own, step by step";
const README_ADDRESS: &str = "127.0.0.1:5000";

/// The ```sh blocks of the README's walkthrough section, in order.
fn walkthrough_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find(SECTION).expect("the walkthrough section");
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest[..rest.find("```").expect("a closed block")].to_string())
        .collect()
}

/// A terminal's commands, run by `sh -e` in their own process group, so that everything
/// they started can be stopped together.
struct Terminal {
    child: Child,
    log: PathBuf,
}

impl Terminal {
    fn start(block: &str, home: &Path, address: &str, name: &str) -> Terminal {
        let log = home.join(format!("{name}.log"));
        let child = shell(block, home, address)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
            .process_group(0)
            .spawn()
            .expect("start sh");
        Terminal { child, log }
    }

    fn log(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        read(&self.log) + &read(&self.log.with_extension("err"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group of our own child.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn shell(block: &str, home: &Path, address: &str) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_tf"))
        .parent()
        .expect("bin dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .args(["-e", "-c", &block.replace(README_ADDRESS, address)])
        .current_dir(home)
        .env("HOME", home)
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        // What the README leaves to the defaults: `tf serve` listens on 127.0.0.1:5000.
        .env("TF_BIND", address)
        .env_remove("TF_DATA_DIR")
        .env_remove("TESTFLINGER_SERVER")
        .env_remove("TESTFLINGER_CLIENT_ID")
        .env_remove("TESTFLINGER_SECRET_KEY");
    command
}

/// Whether the server at `address` answers `GET /v1`.
fn answers(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let mut status = [0u8; 12];
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .is_ok()
        && stream.write_all(b"GET /v1 HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_exact(&mut status).is_ok()
        && status.ends_with(b" 200")
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").to_string()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let blocks = walkthrough_blocks();
    let [server_block, agent_block, user_block] = blocks.as_slice() else {
        panic!("the walkthrough has a server, an agent and a user terminal: {blocks:?}");
    };
    let home = tempfile::tempdir().unwrap();
    let address = free_address();

    let server = Terminal::start(server_block, home.path(), &address, "server");
    // As a person waits for its "listening" line: the port may be bound before the
    // data dir is ready, and `tf clients` works on the data dir.
    assert!(eventually(|| answers(&address)), "{}", server.log());
    let agent = Terminal::start(agent_block, home.path(), &address, "agent");
    let tf_on_lab = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tf"))
            .args(["--server", &format!("http://{address}")])
            .args(args)
            .env("XDG_CONFIG_HOME", home.path().join(".probe"))
            .output()
            .expect("run tf")
    };
    let waiting = || {
        let status = tf_on_lab(&["list-agents", "-1", "--filter-status", "waiting"]);
        !String::from_utf8_lossy(&status.stdout).trim().is_empty()
    };
    assert!(
        eventually(waiting),
        "the agent never waited for jobs\nserver:\n{}\nagent:\n{}",
        server.log(),
        agent.log()
    );

    let user = shell(user_block, home.path(), &address)
        .stdin(Stdio::null())
        .output()
        .expect("run the user's commands");
    let stdout = String::from_utf8_lossy(&user.stdout);
    assert!(
        user.status.success(),
        "{stdout}\n{}\nserver:\n{}\nagent:\n{}",
        String::from_utf8_lossy(&user.stderr),
        server.log(),
        agent.log()
    );
    assert!(stdout.contains("hello from"), "{stdout}");
    assert!(stdout.contains("\"test_status\": 0"), "{stdout}");
}
