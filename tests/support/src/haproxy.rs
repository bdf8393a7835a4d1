//! HAProxy (Debian's `haproxy`) in front of `tf serve` replicas, as a lab runs it
//! (`packaging/examples/ha/haproxy.cfg`): on a free loopback port, checking each replica's
//! `GET /healthz` often, stopped when dropped.

use std::process::{Child, Command, Stdio};

use crate::http::Caller;

pub struct Haproxy {
    child: Child,
    /// Where clients reach the replicas.
    pub address: String,
    _config: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy balancing over `replicas` (their `host:port`s).
    pub fn start(replicas: &[&str]) -> Haproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(n, address)| format!("    server replica{n} {address} check\n"))
            .collect();
        let config = tempfile::tempdir().expect("temp dir");
        let path = config.path().join("haproxy.cfg");
        std::fs::write(
            &path,
            format!(
                "defaults
    mode http
    option http-server-close
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout queue 30s

frontend testflinger
    bind 127.0.0.1:{port}
    default_backend tf_replicas

backend tf_replicas
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2 on-marked-down shutdown-sessions
    retries 2
    option redispatch 1
{servers}"
            ),
        )
        .expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run haproxy ({e}): apt install haproxy"));
        let address = format!("127.0.0.1:{port}");
        crate::wait::wait_for("haproxy to listen", || {
            std::net::TcpStream::connect(&address).ok()
        });
        Haproxy {
            child,
            address,
            _config: config,
        }
    }

    /// Requests through HAProxy, with `token` if given.
    pub fn caller(&self, token: Option<&str>) -> Caller {
        Caller {
            address: self.address.clone(),
            token: token.map(str::to_string),
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
