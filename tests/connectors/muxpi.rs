//! muxpi provisioning against a fake control host: the fake `ssh` runs the control-host
//! commands locally, with `/dev`, `/mnt` and `/tmp` moved into the test's state directory,
//! and fake `stm`, `dd`, `mount`, `lsblk`, `hdparm` and `sshpass` stand in for the mux, the
//! card and the device.

use serde_json::json;

use tf_test_support::agent::{wait_for_state, Agent};
use tf_test_support::server::Server;

use crate::Bench;

const CONFIG: &str = "agent_name: rpi-1
control_host: control
test_device: /dev/sda
device_ip: 10.0.0.9
reboot_script: [pdu-power-cycle outlet 1]
post_provision_script: [echo post > /tmp/rpi-1/post-ran]
";

/// A card with a boot and a writable partition holding an Ubuntu root.
fn prepare(bench: &Bench) {
    let root = bench.state.path().join("root");
    for dir in ["dev", "mnt", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let partitions = bench.state.path().join("partitions");
    std::fs::create_dir_all(partitions.join("sda1")).unwrap();
    std::fs::create_dir_all(partitions.join("sda2/etc/cloud/cloud.cfg.d")).unwrap();
    std::fs::write(
        partitions.join("sda2/etc/cloud/cloud.cfg.d/99-fake_cloud.cfg"),
        "x",
    )
    .unwrap();
    let lsblk = json!({"blockdevices": [{"name": "sda", "label": null, "children": [
        {"name": "sda1", "label": "system-boot"}, {"name": "sda2", "label": "writable"},
    ]}]});
    std::fs::write(bench.state.path().join("lsblk.json"), lsblk.to_string()).unwrap();
    std::fs::create_dir_all(bench.path("attachments/provision")).unwrap();
    std::fs::write(bench.path("attachments/provision/image.img"), "IMAGE-BYTES").unwrap();
}

fn provision(bench: &Bench) -> crate::Ran {
    bench.run_with(
        &[
            "muxpi",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &[("FAKE_CONTROL", "ubuntu@control")],
    )
}

#[test]
fn muxpi_flashes_the_card_creates_the_user_and_boots_the_device() {
    let bench = Bench::new(
        CONFIG,
        &json!({"provision_data": {"use_attachment": "image.img"}}),
    );
    prepare(&bench);
    let ran = provision(&bench);
    assert_eq!(ran.code, 0, "{}\n{:#?}", ran.stderr, bench.calls());
    let root = bench.state.path().join("root");
    assert_eq!(
        std::fs::read_to_string(root.join("dev/sda")).unwrap(),
        "IMAGE-BYTES"
    );
    let seed = root.join("mnt/rpi-1/writable/var/lib/cloud/seed/nocloud-net");
    assert!(std::fs::read_to_string(seed.join("user-data"))
        .unwrap()
        .contains("ssh_pwauth: true"));
    assert!(seed.join("meta-data").exists());
    assert!(!root
        .join("mnt/rpi-1/writable/etc/cloud/cloud.cfg.d/99-fake_cloud.cfg")
        .exists());
    assert!(
        root.join("tmp/rpi-1/post-ran").exists(),
        "post_provision_script ran"
    );
    assert!(
        ran.stderr.contains("Image type detected: ubuntu"),
        "{}",
        ran.stderr
    );

    // The order that matters: card to the control host, write, card back, reset, check.
    let calls = bench.calls();
    let at = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {calls:#?}"))
    };
    assert!(at("stm -ts") < at("dd "));
    assert!(at("dd ") < at("hdparm -z"));
    assert!(at("hdparm -z") < at("stm -dut"));
    assert!(at("stm -dut") < at("pdu-power-cycle outlet 1"));
    assert!(at("pdu-power-cycle") < at("sshpass -p ubuntu ssh-copy-id"));
    assert!(calls.iter().any(|c| c.ends_with("ubuntu@10.0.0.9")));
}

#[test]
fn muxpi_refuses_jobs_it_cannot_flash() {
    let missing = Bench::new(
        CONFIG,
        &json!({"provision_data": {"use_attachment": "nope.img"}}),
    );
    prepare(&missing);
    let ran = provision(&missing);
    assert_eq!(ran.code, 1);
    let record = missing.json("device-connector-error.json");
    let message = record["provision_exception_info"]["exception_message"]
        .as_str()
        .unwrap();
    assert!(
        message.ends_with("but that attachment doesn't exist: nope.img"),
        "{message}"
    );

    let usb = Bench::new(
        CONFIG,
        &json!({"provision_data": {"use_attachment": "image.img", "media": "usb"}}),
    );
    prepare(&usb);
    let ran = provision(&usb);
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("must include a mux CLI command followed by \"sdwire\" or \"typecmux\""),
        "{}",
        ran.stderr
    );
    // Nothing was written to the card.
    assert!(!usb.state.path().join("root/dev/sda").exists());
}

#[test]
fn muxpi_with_media_switches_both_muxes_to_the_control_host_before_writing() {
    let config = format!("{CONFIG}control_switch_local_cmd: muxctl sdwire set TS\n");
    for (media, mux, device) in [("sd", "sdwire", "sdb"), ("usb", "typecmux", "sdc")] {
        let job = json!({"provision_data": {
            "use_attachment": "image.img", "media": media, "create_user": false,
        }});
        let bench = Bench::new(&config, &job);
        prepare(&bench);
        let ran = provision(&bench);
        assert_eq!(ran.code, 0, "{media}: {}\n{:#?}", ran.stderr, bench.calls());
        let written = bench.state.path().join("root/dev").join(device);
        assert_eq!(std::fs::read_to_string(written).unwrap(), "IMAGE-BYTES");

        let calls = bench.calls();
        let at = |call: &str| {
            calls
                .iter()
                .position(|c| c == call)
                .unwrap_or_else(|| panic!("{media}: no `{call}` in {calls:#?}"))
        };
        // Neither medium can be booted by the device while the image is written.
        assert!(at("muxctl sdwire plug_to_self") < at("muxctl typecmux plug_to_self"));
        let write = calls.iter().position(|c| c.starts_with("dd ")).unwrap();
        assert!(
            at("muxctl typecmux plug_to_self") < write,
            "{media}: {calls:#?}"
        );
        // Only the medium written is handed back, as the reference does.
        assert!(
            write < at(&format!("muxctl {mux} set DUT")),
            "{media}: {calls:#?}"
        );
        let handed_back: Vec<_> = calls
            .iter()
            .filter(|c| c.starts_with("muxctl") && c.ends_with("set DUT"))
            .collect();
        assert_eq!(handed_back.len(), 1, "{media}: {calls:#?}");
    }
}

/// Serves `body` for every request on a local port; the URL.
fn serve_image(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/images/pi.img", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    url
}

#[test]
fn muxpi_downloads_an_image_url_on_the_agent_and_streams_it_to_the_card() {
    let url = serve_image("DOWNLOADED-IMAGE");
    let bench = Bench::new(
        CONFIG,
        &json!({"provision_data": {"url": url, "create_user": false}}),
    );
    prepare(&bench);
    // (No user creation, so the post-provision script's directory is made here.)
    std::fs::create_dir_all(bench.state.path().join("root/tmp/rpi-1")).unwrap();
    let ran = provision(&bench);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let card = std::fs::read_to_string(bench.state.path().join("root/dev/sda")).unwrap();
    assert_eq!(card, "DOWNLOADED-IMAGE");
    assert!(ran
        .stderr
        .contains("Skipping test user creation (create_user=False)"));
    assert!(!bench.calls().iter().any(|c| c.starts_with("lsblk")));
}

#[test]
fn muxpi_reports_an_image_url_that_does_not_work() {
    // Nothing listens on port 9 of localhost.
    let job = json!({"provision_data": {"url": "http://127.0.0.1:9/missing.img"}});
    let bench = Bench::new(CONFIG, &job);
    prepare(&bench);
    let ran = provision(&bench);
    assert_eq!(ran.code, 1);
    let record = bench.json("device-connector-error.json");
    let message = record["provision_exception_info"]["exception_message"]
        .as_str()
        .unwrap();
    assert!(
        message.starts_with("cannot download the image http://127.0.0.1:9/missing.img"),
        "{message}"
    );
    // The card went back to the device.
    assert!(
        bench.calls().iter().any(|c| c == "stm -dut"),
        "{:#?}",
        bench.calls()
    );
}

#[test]
fn an_agent_flashes_a_device_through_muxpi_end_to_end() {
    let server = Server::start();
    // The device's files and the fake hardware, as in the other muxpi tests.
    let bench = Bench::new(CONFIG, &json!({}));
    prepare(&bench);
    let fakes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes");
    let tf = env!("CARGO_BIN_EXE_tf");
    let environment = format!(
        "FAKE_CONTROL=ubuntu@control FAKE_STATE={} PATH={}:$PATH",
        bench.state.path().display(),
        fakes.display()
    );
    let config = bench.path("default.yaml");
    let settings = format!(
        "provision_command: {environment} {tf} device-connector muxpi provision -c {0} testflinger.json\ntest_command: {tf} device-connector muxpi runtest -c {0} testflinger.json\n",
        config.display()
    );
    let _agent = Agent::start(&server, &settings);
    let image = serve_image("FLASHED-BY-THE-AGENT");
    let job_id = server.submit(&json!({
        "job_queue": "q",
        "provision_data": {"url": image},
        "test_data": {"test_cmds": "echo testing $AGENT_NAME"},
    }));
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["provision_status"], json!(0), "{result}");
    assert_eq!(result["test_status"], json!(0), "{result}");
    assert!(
        result["test_output"]
            .as_str()
            .unwrap()
            .contains("testing rpi-1\n"),
        "{result}"
    );
    let card = std::fs::read_to_string(bench.state.path().join("root/dev/sda")).unwrap();
    assert_eq!(card, "FLASHED-BY-THE-AGENT");
    assert_eq!(result["device_info"]["device_ip"], json!("10.0.0.9"));
}
