use std::io::{Read, Write};
use std::sync::Arc;

use tf_test_support::server::Server;
use tf_test_support::tf;

/// A `tf serve` with TLS (the harness's servers speak plain HTTP).
struct TlsServer {
    child: std::process::Child,
    address: String,
    _data: tempfile::TempDir,
}

impl TlsServer {
    fn start(cert: &str, key: &str) -> TlsServer {
        use std::io::BufRead;
        let data = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--data-dir",
            ])
            .arg(data.path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines
            .find_map(|line| line.ok().filter(|l| l.contains("listening on https://")))
            .expect("started");
        std::thread::spawn(move || lines.for_each(drop));
        let address = line
            .split("https://")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        TlsServer {
            child,
            address,
            _data: data,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1, written as PEM files in `dir`.
fn certificate(
    dir: &std::path::Path,
) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().into(),
        key.to_str().unwrap().into(),
        generated.cert.der().clone(),
    )
}

/// One HTTPS GET, trusting only `root`; the raw answer.
fn https_get(
    address: &str,
    path: &str,
    root: rustls::pki_types::CertificateDer<'static>,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls =
        rustls::StreamOwned::new(connection, std::net::TcpStream::connect(address).unwrap());
    if write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return String::new(); // the handshake failed
    }
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    answer
}

#[test]
fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, root) = certificate(dir.path());
    let server = TlsServer::start(&cert, &key);
    let answer = https_get(&server.address, "/v1/", root);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Testflinger Server"));

    // Plain HTTP on the TLS port gets no answer, and the server carries on.
    let mut plain = std::net::TcpStream::connect(&server.address).unwrap();
    plain
        .write_all(b"GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!String::from_utf8_lossy(&reply).contains("Testflinger Server"));
    let answer = https_get(&server.address, "/v1/", root_of_another_certificate());
    assert!(
        answer.is_empty(),
        "a client that does not trust the certificate gets nothing"
    );
}

fn root_of_another_certificate() -> rustls::pki_types::CertificateDer<'static> {
    let other = tempfile::tempdir().unwrap();
    certificate(other.path()).2
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap();
    let output = tf(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--tls-cert",
        junk,
        "--tls-key",
        junk,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no PEM certificates in"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let half = tf(&["serve", "--tls-cert", junk]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-key"));
}

/// `tf <args>` as a client of `server`, with a private config directory; its stderr.
fn client_error(server: &str, args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["--server", server])
        .args(args)
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_client_that_mixes_up_http_and_https_is_told_so() {
    let plain = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let tls = TlsServer::start(&cert, &key);
    for (address, given, right, what_happened) in [
        (
            &plain.address,
            "https",
            "http",
            "answered without TLS: if it serves plain HTTP",
        ),
        (
            &tls.address,
            "http",
            "https",
            "did not answer in HTTP: if it serves HTTPS",
        ),
    ] {
        let stderr = client_error(&format!("{given}://{address}"), &["list-queues"]);
        let expected =
            format!("the server at {given}://{address} {what_happened}, use {right}://{address}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
}
