//! Files in and out of a job: attachments (hostile ones too) and masked secrets.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use tf_test_support::agent::{wait_for_state, Agent};
use tf_test_support::http::Caller;
use tf_test_support::server::Server;

enum Kind<'a> {
    File(&'a str, u32),
    /// A regular file whose header claims this many bytes; none follow.
    Claimed(u64),
    Symlink(&'a str),
    Fifo,
}

/// A gzip-compressed tar with members named exactly as given: the names are written into
/// the headers raw, so `..` and absolute paths get through as an attacker would send them.
fn archive(members: &[(&str, Kind)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, kind) in members {
        let mut header = Header::new_gnu();
        let raw = &mut header.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        let content: &[u8] = match kind {
            Kind::File(text, mode) => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(*mode);
                text.as_bytes()
            }
            Kind::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_link_name(target).unwrap();
                header.set_mode(0o777);
                b""
            }
            Kind::Fifo => {
                header.set_entry_type(EntryType::Fifo);
                header.set_mode(0o644);
                b""
            }
            Kind::Claimed(_) => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(0o644);
                b""
            }
        };
        header.set_size(match kind {
            Kind::Claimed(size) => *size,
            _ => content.len() as u64,
        });
        header.set_cksum();
        builder.append(&header, content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Submits a job that declares attachments and uploads `archive` for it.
fn submit_with_attachments(server: &Server, job: &Value, archive: &[u8]) -> String {
    let job_id = server.submit(job);
    let upload = server.upload(&format!("/v1/job/{job_id}/attachments"), "file", archive);
    assert_eq!(upload.status, 200, "{}", upload.text());
    job_id
}

#[test]
fn attachments_are_unpacked_for_the_phases() {
    let server = Server::start();
    let settings = "test_command: cat attachments/test/data/hello.txt; test -x attachments/test/run.sh && echo executable\n";
    let _agent = Agent::start(&server, settings);
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x", "attachments": [{"agent": "data/hello.txt"}]},
    });
    let files = archive(&[
        ("test/data/hello.txt", Kind::File("hi there\n", 0o666)),
        ("test/run.sh", Kind::File("#!/bin/sh\n", 0o777)),
    ]);
    let job_id = submit_with_attachments(&server, &job, &files);
    let result = wait_for_state(&server, &job_id, &["complete"]);
    let output = result["test_output"].as_str().unwrap();
    assert!(output.ends_with("hi there\nexecutable\n"), "{output:?}");
}

#[test]
fn hostile_attachments_are_refused_whole() {
    let server = Server::start();
    // Setup would run first; cleanup shows what landed in the run directory.
    let settings = "setup_command: echo setup ran\ncleanup_command: ls -R attachments 2>/dev/null || echo nothing unpacked\n";
    let _agent = Agent::start(&server, settings);
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x", "attachments": [{"agent": "a"}]},
    });
    let hostile = [
        ("test/../../escape.txt", Kind::File("x", 0o644)),
        ("/tmp/absolute.txt", Kind::File("x", 0o644)),
        ("elsewhere.txt", Kind::File("x", 0o644)),
        ("test/link", Kind::Symlink("/etc")),
        ("test/up", Kind::Symlink("../../../..")),
        ("test/pipe", Kind::Fifo),
        // A link to `.` makes a lexically harmless path climb for real.
        ("test/q", Kind::Symlink(".")),
    ];
    for bad in hostile {
        let name = bad.0;
        let through_link = (
            "test/q/q/q/q/q/l",
            Kind::Symlink("../../../../../../../../etc/passwd"),
        );
        let mut members = vec![("test/fine.txt", Kind::File("fine", 0o644)), bad];
        if name == "test/q" {
            members.push(through_link);
        }
        let files = archive(&members);
        let job_id = submit_with_attachments(&server, &job, &files);
        let result = wait_for_state(&server, &job_id, &["complete"]);
        let setup = result["setup_output"].as_str().unwrap_or_default();
        assert!(
            setup.contains("ERROR: cannot unpack the job's attachments"),
            "{name}: {result}"
        );
        // Not a pass: the agent failed before the first phase (the reference's agent
        // reports no status at all here).
        assert_eq!(result["setup_status"], json!(100), "{name}: {result}");
        assert_eq!(
            result["outcome"],
            json!({"result": "infrastructure_failure", "phase": "setup", "exit_code": 100}),
            "{name}"
        );
        let cleanup = result["cleanup_output"].as_str().unwrap();
        assert!(
            cleanup.ends_with("nothing unpacked\n"),
            "{name}: {cleanup:?}"
        );
    }
}

/// Runs a job with attachments `files` on an agent with `settings` whose cleanup lists
/// what was unpacked; returns the job's result.
fn run_with_attachments(server: &Server, settings: &str, files: &[u8]) -> Value {
    let settings = format!(
        "{settings}setup_command: echo setup ran\n\
         cleanup_command: ls -R attachments 2>/dev/null || echo nothing unpacked\n"
    );
    let _agent = Agent::start(server, &settings);
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x", "attachments": [{"agent": "a"}]},
    });
    let job_id = submit_with_attachments(server, &job, files);
    wait_for_state(server, &job_id, &["complete"])
}

/// Asserts the job's setup was refused with `reason` and nothing was unpacked.
fn assert_refused(result: &Value, reason: &str) {
    let setup = result["setup_output"].as_str().unwrap_or_default();
    assert!(
        setup.contains("ERROR: cannot unpack the job's attachments") && setup.contains(reason),
        "{result}"
    );
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "setup", "exit_code": 100}),
        "{result}"
    );
    let cleanup = result["cleanup_output"].as_str().unwrap_or_default();
    assert!(cleanup.ends_with("nothing unpacked\n"), "{cleanup:?}");
}

#[test]
fn attachments_over_the_configured_limit_are_refused_whole() {
    let server = Server::start();
    let kilobyte = "k".repeat(1000);
    let files = archive(&[
        ("test/one.txt", Kind::File(&kilobyte, 0o644)),
        ("test/two.txt", Kind::File(&kilobyte, 0o644)),
    ]);
    let result = run_with_attachments(&server, "attachments_max_bytes: 1500\n", &files);
    assert_refused(&result, "more than 1500 bytes (attachments_max_bytes)");
}

/// Bytes free to an unprivileged user on the filesystem of `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a struct of the right type to fill.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64
}

#[test]
fn attachments_larger_than_the_free_space_are_refused_whole() {
    let server = Server::start();
    // Declared sizes only: twice what the disk has free, with room to spare.
    let claimed = free_bytes(&std::env::temp_dir()) * 2 + (1 << 30);
    let files = archive(&[
        ("test/fine.txt", Kind::File("fine", 0o644)),
        ("test/huge.img", Kind::Claimed(claimed)),
    ]);
    let result = run_with_attachments(
        &server,
        "attachments_max_bytes: 4611686018427387904\n",
        &files,
    );
    assert_refused(&result, "bytes free on");
}

#[test]
fn an_old_style_member_named_like_a_directory_is_a_usable_directory() {
    let server = Server::start();
    let settings = "test_command: stat -c %a attachments/test/d; cat attachments/test/d/f.txt\n";
    let _agent = Agent::start(&server, settings);
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x", "attachments": [{"agent": "d/f.txt"}]},
    });
    // Pre-POSIX tar: a "regular file" named `test/d/` is the directory test/d.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut file = Header::new_gnu();
    file.set_path("test/d/f.txt").unwrap();
    file.set_mode(0o644);
    file.set_size(7);
    file.set_cksum();
    tar.append(&file, &b"inside\n"[..]).unwrap();
    let mut old_style = Header::new_old();
    old_style.as_old_mut().name[..7].copy_from_slice(b"test/d/");
    old_style.set_entry_type(EntryType::Regular);
    old_style.set_mode(0o644);
    old_style.set_size(0);
    old_style.set_cksum();
    tar.append(&old_style, &b""[..]).unwrap();
    let files = tar.into_inner().unwrap().finish().unwrap();
    let job_id = submit_with_attachments(&server, &job, &files);
    let result = wait_for_state(&server, &job_id, &["complete"]);
    let output = result["test_output"].as_str().unwrap();
    assert!(output.ends_with("755\ninside\n"), "{output:?}");
}

#[test]
fn secrets_reach_the_phase_but_not_its_output() {
    let server = Server::start_with(&[]);
    let dev: Caller = server.client("dev", "contributor", &[]);
    let value = "s3cr3t-value-that-must-not-leak";
    let stored = dev.put_secret("dev", "lab/token", value);
    assert_eq!(stored.status, 200, "{}", stored.text());
    let settings = "test_command: 'echo \"token is $TOKEN\"; echo \"again: $TOKEN\" >&2'\n";
    let agent = Agent::start(&server, settings);
    let job_id = dev.submit(&json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x", "secrets": {"TOKEN": "lab/token"}},
    }));
    let result = wait_for_state(&server, &job_id, &["complete"]);
    let output = result["test_output"]
        .as_str()
        .unwrap_or_else(|| panic!("{result}\n{}", agent.log()));
    let digest = Sha256::digest(value.as_bytes());
    let mask = format!("**{:02x}{:02x}{:02x}**", digest[0], digest[1], digest[2]);
    assert!(
        output.ends_with(&format!("token is {mask}\nagain: {mask}\n")),
        "{output:?}"
    );
    assert!(!output.contains(value));
}
