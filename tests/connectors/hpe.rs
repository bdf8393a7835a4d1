//! HPE firmware through iLO: a fake `ilorest`, MAAS's power parameters from the fake
//! `maas`, and a local stand-in for HPE's service-pack repository.

use std::io::{BufRead, BufReader, Write};

use serde_json::json;

use crate::Bench;

/// Serves `files` (path → body) on a local port; the base URL.
fn repository(files: Vec<(&'static str, String)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/SDR/repo/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let found = files.iter().find(|(p, _)| path.ends_with(p));
            let (status, body) = match found {
                Some((_, body)) => ("200 OK", body.clone()),
                None => ("404 Not Found", String::new()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    base
}

fn inventory(rom: &str) -> String {
    json!({"Members": [
        {"Name": "System ROM", "Version": rom, "Oem": {"Hpe": {"DeviceClass": "rom-class", "Targets": ["t-rom"]}}},
        {"Name": "Power Supply", "Version": "1.0", "Oem": {"Hpe": {"DeviceClass": "psu"}}},
    ]})
    .to_string()
}

fn server(data: serde_json::Value) -> Bench {
    let index = json!({
        "U30_2.80.fwpkg": {"target": ["t-rom"], "deviceclass": "rom-class", "version": "U30 v2.80 (01/01/2024)", "minimum_active_version": "null"},
        "other.fwpkg": {"target": ["t-nic"], "deviceclass": "nic", "version": "9.9"},
    });
    let base = repository(vec![
        (
            "/fwpp-gen10/",
            "<a href=\"2023.09.00.04/\">2023.09.00.04/</a> <a href=\"2022.03.0/\">2022.03.0/</a>"
                .into(),
        ),
        ("/current/fwrepodata/fwrepo.json", "{}".into()),
        ("/2023.09.00.04/fwrepodata/fwrepo.json", index.to_string()),
        ("/2023.09.00.04/U30_2.80.fwpkg", "PACKAGE".into()),
    ]);
    let config = format!("agent_name: hpe-1\ndevice_ip: 10.0.0.20\nmaas_user: prof\nnode_id: n1\nhpe_repository_url: {base}\n");
    let bench = Bench::new(&config, &json!({"firmware_update_data": data}));
    let dmi = bench.state.path().join("dut/sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("chassis_vendor"), "HPE").unwrap();
    std::fs::write(dmi.join("chassis_type"), "23").unwrap();
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    std::fs::write(
        bench.state.path().join("ilo-inventory.json"),
        inventory("U30 v2.76 (02/09/2023)"),
    )
    .unwrap();
    std::fs::write(
        bench.state.path().join("ilo-inventory-flashed.json"),
        inventory("U30 v2.80 (01/01/2024)"),
    )
    .unwrap();
    bench
}

#[test]
fn hpe_servers_get_the_latest_service_pack_through_ilo() {
    let bench = server(json!({"version": "latest"}));
    let ran = bench.update_firmware();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(bench.path("U30_2.80.fwpkg")).unwrap(),
        "PACKAGE"
    );
    let calls = bench.calls();
    assert!(
        calls.contains(&"ilorest flashfwpkg --forceupload U30_2.80.fwpkg".to_string()),
        "{calls:#?}"
    );
    assert!(calls.contains(&"ilorest reboot".to_string()));
    assert!(
        ran.stderr.contains(
            "[System ROM] flash current firmware U30 v2.76 (02/09/2023) to U30 v2.80 (01/01/2024)"
        ),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("[System ROM] firmware flashed"));
    // The BMC password never shows in the log.
    assert!(!ran.stderr.contains("bmc-s3cret"), "{}", ran.stderr);
    assert!(ran.stderr.contains("login 127.0.0.1 -u admin -p ****"));
}

#[test]
fn an_spp_the_repository_does_not_have_is_refused() {
    // A prefix of an available SPP is not a match (the reference accepts substrings).
    let bench = server(json!({"version": "2023.09"}));
    let ran = bench.update_firmware();
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("Firmware Update failed: SPP 2023.09 is not available in HPE FW repository."),
        "{}",
        ran.stderr
    );
    let ignored = server(json!({"version": "2023.09", "ignore_failure": true}));
    assert_eq!(ignored.update_firmware().code, 0);
}
