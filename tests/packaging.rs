//! The packaging (packaging/): the systemd units, the install script and the example
//! configs a lab admin copies, each checked with the real `tf` so that none of them
//! drifts away from what the binary accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use tf_test_support::server::Server;

const TF: &str = env!("CARGO_BIN_EXE_tf");
/// The example devices: each has testflinger-agent.conf, default.yaml and job.yaml.
const DEVICES: [&str; 2] = ["muxpi", "maas2"];

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(path)
}

fn example(device: &str, file: &str) -> PathBuf {
    packaging(&format!("examples/{device}/{file}"))
}

/// A YAML file as JSON, to look into it.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run a command")
}

#[test]
fn the_example_server_config_starts_tf_serve() {
    // The example's bind and data_dir are the lab's: the flags override them.
    let config = packaging("examples/server.yaml");
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let answer = server.get("/v1");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("Testflinger Server"), "{answer:?}");
    assert!(server.data_dir.join("tf.db").exists());
}

#[test]
fn the_example_agent_configs_pass_the_check() {
    for device in DEVICES {
        let conf = example(device, "testflinger-agent.conf");
        let checked = run(Command::new(TF).args(["agent", "--check", "-c"]).arg(&conf));
        assert!(
            checked.status.success(),
            "{conf:?}: {}",
            text(&checked.stderr)
        );

        // The files are where the tf-agent@ unit expects them (see its comments): the
        // connector's config next to the agent's, the run dirs in its state directory.
        let agent = yaml(&conf);
        let agent_id = agent["agent_id"].as_str().expect("agent_id");
        for key in ["execution_basedir", "logging_basedir", "results_basedir"] {
            let dir = agent[key].as_str().unwrap_or_default();
            let state_dir = format!("/var/lib/testflinger-agent/{agent_id}/");
            assert!(dir.starts_with(&state_dir), "{conf:?}: {key}");
        }
        let connector_config = format!("/etc/testflinger-agent/{agent_id}/default.yaml");
        let entries = agent.as_object().unwrap();
        for (_, command) in entries.iter().filter(|(key, _)| key.ends_with("_command")) {
            let command = command.as_str().unwrap();
            let stage = command.split_whitespace().nth(3).unwrap_or_default();
            assert_eq!(
                command,
                format!(
                    "tf device-connector {device} {stage} -c {connector_config} testflinger.json"
                ),
                "{conf:?}"
            );
        }
    }
}

#[test]
fn a_broken_agent_config_fails_the_check_naming_key_and_file() {
    let temp = tempfile::tempdir().unwrap();
    let broken = temp.path().join("testflinger-agent.conf");
    let good = std::fs::read_to_string(example("muxpi", "testflinger-agent.conf")).unwrap();
    std::fs::write(&broken, format!("{good}colour: red\n")).unwrap();

    let checked = run(Command::new(TF)
        .args(["agent", "--check", "-c"])
        .arg(&broken));
    assert_eq!(checked.status.code(), Some(78));
    let stderr = text(&checked.stderr);
    assert!(stderr.contains("unknown key `colour`"), "{stderr}");
    assert!(stderr.contains(broken.to_str().unwrap()), "{stderr}");
}

#[test]
fn the_example_connector_configs_describe_their_device() {
    for device in DEVICES {
        let config_file = example(device, "default.yaml");
        let config = yaml(&config_file);
        let run_dir = tempfile::tempdir().unwrap();
        // The job as the agent would hand it over.
        let mut job = yaml(&example(device, "job.yaml"));
        job["job_id"] = json!("00000000-0000-4000-8000-000000000000");
        std::fs::write(run_dir.path().join("testflinger.json"), job.to_string()).unwrap();

        let allocated = run(Command::new(TF)
            .args(["device-connector", device, "allocate", "-c"])
            .arg(&config_file)
            .arg("testflinger.json")
            .current_dir(run_dir.path()));
        assert!(
            allocated.status.success(),
            "{device}: {}",
            text(&allocated.stderr)
        );

        let info = std::fs::read_to_string(run_dir.path().join("device-info.json")).unwrap();
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(
            info,
            json!({"device_info": {
                "device_ip": config["device_ip"],
                "agent_name": config["agent_name"],
            }})
        );
        // The connector's name for the device is the agent's.
        let agent = yaml(&example(device, "testflinger-agent.conf"));
        assert_eq!(config["agent_name"], agent["agent_id"], "{device}");
    }
}

#[test]
fn the_example_jobs_are_accepted_by_tf_serve() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let client = |args: &[&str]| {
        run(Command::new(TF)
            .args(["--server", &format!("http://{}", server.address)])
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("TESTFLINGER_SERVER")
            .env_remove("TESTFLINGER_CLIENT_ID")
            .env_remove("TESTFLINGER_SECRET_KEY"))
    };
    for device in DEVICES {
        // The example agent comes online. The client submits only when an agent serves
        // the job's queue: this also checks that the example job suits the example agent.
        let agent = yaml(&example(device, "testflinger-agent.conf"));
        let agent_id = agent["agent_id"].as_str().unwrap();
        let registered = server.agent().post_json(
            &format!("/v1/agents/data/{agent_id}"),
            &json!({"state": "waiting", "queues": agent["job_queues"]}),
        );
        assert_eq!(registered.status, 200, "{}", registered.text());

        let job = example(device, "job.yaml");
        let submitted = client(&["submit", "-q", job.to_str().unwrap()]);
        assert!(
            submitted.status.success(),
            "{device}: {}",
            text(&submitted.stderr)
        );
        let job_id = text(&submitted.stdout).trim().to_string();
        assert_eq!(job_id.len(), 36, "{job_id:?}");

        let status = client(&["status", &job_id]);
        assert_eq!(text(&status.stdout), "waiting\n", "{device}");
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // verify wants ExecStart's program to exist: the copies run the binary under test.
    let temp = tempfile::tempdir().unwrap();
    let copies = [
        ("tf-server.service", "tf-server.service"),
        ("tf-agent@.service", "tf-agent@rpi-7.service"),
    ];
    for (unit, copy) in copies {
        let original = std::fs::read_to_string(packaging(&format!("systemd/{unit}"))).unwrap();
        assert!(original.contains("ExecStart=/usr/local/bin/tf "), "{unit}");
        let rewritten =
            original.replace("ExecStart=/usr/local/bin/tf ", &format!("ExecStart={TF} "));
        std::fs::write(temp.path().join(copy), rewritten).unwrap();
    }
    for (_, copy) in copies {
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .arg(temp.path().join(copy))
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run systemd-analyze ({e}): install systemd to check the units")
            });
        // Unknown keys and bad values are only warnings: any line about the unit fails.
        let output = text(&verified.stderr) + &text(&verified.stdout);
        let complaints: Vec<&str> = output.lines().filter(|l| l.contains(copy)).collect();
        assert!(
            verified.status.success() && complaints.is_empty(),
            "{copy}: {output}"
        );
    }
}

#[test]
fn the_example_haproxy_configuration_is_valid_and_checks_the_replicas_health() {
    let config = packaging("examples/ha/haproxy.cfg");
    let checked = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("cannot run haproxy ({e}): install it to check the example"));
    let output = text(&checked.stderr) + &text(&checked.stdout);
    assert!(checked.status.success(), "{output}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("option httpchk GET /healthz"), "{text}");
    // Long-polls last up to 60 s: a shorter server timeout would cut them off.
    assert!(text.contains("timeout server 120s"), "{text}");
}

#[test]
fn the_high_availability_drill_passes() {
    let drill = Command::new(packaging("ha-drill.sh"))
        .arg(TF)
        .output()
        .expect("run packaging/ha-drill.sh");
    let output = text(&drill.stdout) + &text(&drill.stderr);
    assert!(drill.status.success(), "{output}");
    assert!(output.contains("PASSED"), "{output}");
    // It tells the operator what clients see while the database switches over.
    assert!(output.contains("the database is unavailable"), "{output}");
}

#[test]
fn install_sh_installs_the_binary_under_every_role_name() {
    let destdir = tempfile::tempdir().unwrap();
    let installed = run(Command::new("bash")
        .arg(packaging("install.sh"))
        .arg("--destdir")
        .arg(destdir.path())
        .arg(TF));
    assert!(installed.status.success(), "{}", text(&installed.stderr));

    let bin = destdir.path().join("usr/local/bin");
    assert!(bin.join("tf").is_file());
    for name in role_names() {
        let link = std::fs::read_link(bin.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(link, Path::new("tf"), "{name}");
    }
    for file in [
        "etc/systemd/system/tf-server.service",
        "etc/systemd/system/tf-agent@.service",
        "etc/tf/server.yaml",
    ] {
        assert!(destdir.path().join(file).is_file(), "{file}");
    }

    // The names pick the role: the client's help, the agent's config check.
    let help = run(Command::new(bin.join("testflinger-cli")).arg("--help"));
    assert!(help.status.success(), "{}", text(&help.stderr));
    assert!(
        text(&help.stdout).contains("submit"),
        "{}",
        text(&help.stdout)
    );
    let check = run(Command::new(bin.join("testflinger-agent"))
        .args(["--check", "-c"])
        .arg(example("muxpi", "testflinger-agent.conf")));
    assert!(check.status.success(), "{}", text(&check.stderr));
}

/// The names in `ROLE_NAMES` (src/lib.rs): install.sh must link every one of them.
fn role_names() -> Vec<String> {
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let table = main
        .split("const ROLE_NAMES")
        .nth(1)
        .and_then(|rest| rest.split("];").next())
        .expect("ROLE_NAMES in src/lib.rs");
    let names: Vec<String> = table
        .lines()
        .filter_map(|line| line.trim().strip_prefix("(\"")?.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "no names found in ROLE_NAMES");
    names
}
