//! Connections cannot exhaust the server: idle ones are timed out or closed to make room,
//! the open-file limit is raised, and requests in flight (long-polls) are never cut.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tf_test_support::http::send;
use tf_test_support::server::Server;

/// More idle sockets than a server limited to 1,024 open files can hold.
const FLOOD: usize = 1_100;

/// The deadline for a request made during the flood.
const DEADLINE: Duration = Duration::from_secs(60);

/// This test process needs a descriptor per idle socket, whatever the shell gave it.
fn raise_own_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max as usize > FLOOD + 200,
            "the test needs a hard open-file limit above {}",
            FLOOD + 200
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

fn open_idle_sockets(address: &str, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| TcpStream::connect(address).expect("connect an idle socket"))
        .collect()
}

/// `GET /v1/`, retried until it is answered or the deadline passes; the answer's status.
fn get_root_within(address: &str, deadline: Duration) -> Option<u16> {
    let end = Instant::now() + deadline;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(status) = get_root(address, left) {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// One `GET /v1/` that gives up after `patience` (a server that never accepts the
/// connection leaves it waiting in the kernel's queue).
fn get_root(address: &str, patience: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(patience)).ok()?;
    stream
        .write_all(b"GET /v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let status = answer.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    std::str::from_utf8(status).ok()?.parse().ok()
}

/// Whether the server closes `socket` (end of file) before `deadline`.
fn closed_by_server(socket: &mut TcpStream, deadline: Duration) -> bool {
    socket.set_read_timeout(Some(deadline)).unwrap();
    let mut byte = [0u8; 1];
    // EOF, or a reset from a server that dropped the connection.
    !matches!(socket.read(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        || e.kind() == std::io::ErrorKind::TimedOut)
}

#[test]
fn idle_sockets_beyond_a_hard_open_file_limit_do_not_lock_requests_out() {
    raise_own_open_file_limit();
    // A header timeout longer than the deadline: only closing idle connections for room
    // can let the request through.
    let server = Server::start_with_open_file_limit(1024, 1024, &["--header-timeout", "10m"]);
    let idle = open_idle_sockets(&server.address, FLOOD);
    assert_eq!(get_root_within(&server.address, DEADLINE), Some(200));
    drop(idle);
    assert_eq!(get_root_within(&server.address, DEADLINE), Some(200));
    let again = open_idle_sockets(&server.address, FLOOD);
    assert_eq!(get_root_within(&server.address, DEADLINE), Some(200));
    drop(again);
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let server = Server::start_with_open_file_limit(1024, 4096, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open-files line")
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3..5], ["4096", "4096"], "{limits}");
}

#[test]
fn connections_that_send_no_request_are_closed_after_the_header_timeout() {
    let server = Server::start_with(&["--header-timeout", "1s"]);
    let mut silent = TcpStream::connect(&server.address).unwrap();
    assert!(closed_by_server(&mut silent, DEADLINE));

    let mut slow = TcpStream::connect(&server.address).unwrap();
    slow.write_all(b"GET /v1/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(closed_by_server(&mut slow, DEADLINE));

    // Kept alive after an answer, then idle: closed too.
    let mut kept_alive = TcpStream::connect(&server.address).unwrap();
    kept_alive
        .write_all(b"GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    kept_alive.set_read_timeout(Some(DEADLINE)).unwrap();
    kept_alive
        .read_to_end(&mut rest)
        .expect("the server closes the idle connection");
}

#[test]
fn a_long_poll_outlasts_the_header_timeout() {
    let server = Server::start_with(&["--header-timeout", "1s"]);
    let path = "/v1/result/4c0ffee0-0000-4000-8000-000000000000/log/output?wait=3";
    let started = Instant::now();
    let response = server.get(path);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the long-poll ran to its end"
    );
}

#[test]
fn over_the_connection_cap_busy_connections_are_kept_and_idle_ones_closed() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let path = "/v1/result/4c0ffee0-0000-4000-8000-000000000000/log/output?wait=4";
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let address = server.address.clone();
            std::thread::spawn(move || send(&address, "GET", path, &[], b""))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Both places are taken by requests in flight: a third connection gets nothing.
    assert_eq!(get_root(&server.address, DEADLINE), None);
    for poll in polls {
        let response = poll.join().unwrap().expect("the long-poll is answered");
        assert_eq!(response.status, 200);
    }

    // Idle connections make room for new ones.
    let mut idle = open_idle_sockets(&server.address, 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get_root_within(&server.address, DEADLINE), Some(200));
    assert!(closed_by_server(&mut idle[0], DEADLINE));
}
