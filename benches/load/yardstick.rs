//! The yardstick: the least a server of tf's job-queue subset must do, to measure tf against
//! on the same machine in the same run. `POST /v1/job` stores the job and answers its id,
//! `GET /v1/job?queue=Q` hands out the oldest waiting job of Q once (204 when there is none,
//! as tf). hyper 1 on tokio's multi-threaded runtime in front, SQLite behind with tf's
//! durability (WAL, `synchronous=NORMAL`): one writer thread takes whatever requests are
//! queued, runs them in one transaction and answers each after the commit (group commit).
//! Every request, the empty poll included, goes through the writer; nothing else is read.

use std::convert::Infallible;
use std::path::Path;
use std::sync::mpsc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// What the writer thread does for one request.
enum Write {
    Submit { queue: String, data: String },
    Claim { queue: String },
}

/// A write and where its answer goes once committed.
type Queued = (Write, oneshot::Sender<Response<Full<Bytes>>>);

const SCHEMA: &str = "
    CREATE TABLE jobs (seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL UNIQUE,
                       queue TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL);
    CREATE INDEX waiting_jobs ON jobs (queue, seq) WHERE state = 'waiting';";

/// Serves on a free port of 127.0.0.1, its database in `data_dir`, until killed. Says where
/// on stderr as `tf serve` does: "listening on http://ADDRESS".
pub fn serve(data_dir: &Path) {
    let database = data_dir.join("yardstick.db");
    let connection = open(&database);
    connection.execute_batch(SCHEMA).expect("schema");
    let (writes, queued) = mpsc::channel::<Queued>();
    std::thread::spawn(move || write_in_groups(&connection, queued));
    // As tf: WAL pages go to the database file on a thread of their own, not in the writer.
    let checkpoints = open(&database);
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let _ = checkpoints.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        eprintln!(
            "yardstick listening on http://{}",
            listener.local_addr().unwrap()
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let writes = writes.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let writes = writes.clone();
                    async move { Ok::<_, Infallible>(answer(request, &writes).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A connection with tf's settings (src/store/open.rs): the same durability, the same WAL
/// and cache sizes.
fn open(database: &Path) -> Connection {
    let connection = Connection::open(database).expect("open database");
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 16000; PRAGMA journal_size_limit = 134217728;
             PRAGMA cache_size = -16384;",
        )
        .expect("pragmas");
    connection
}

async fn answer(
    request: Request<Incoming>,
    writes: &mpsc::Sender<Queued>,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/v1/job" {
        return reply(StatusCode::NOT_FOUND, "");
    }
    let write = match *request.method() {
        Method::POST => {
            let Ok(body) = request.into_body().collect().await else {
                return reply(StatusCode::BAD_REQUEST, "");
            };
            let job: Option<Map<String, Value>> = serde_json::from_slice(&body.to_bytes()).ok();
            match job.as_ref().and_then(|job| job.get("job_queue")?.as_str()) {
                Some(queue) => Write::Submit {
                    queue: queue.to_string(),
                    data: serde_json::to_string(&job).unwrap(),
                },
                None => return reply(StatusCode::BAD_REQUEST, r#"{"message": "no job_queue"}"#),
            }
        }
        Method::GET => {
            let query = request.uri().query().unwrap_or("").as_bytes();
            match form_urlencoded::parse(query).find(|(name, _)| name == "queue") {
                Some((_, queue)) => Write::Claim {
                    queue: queue.into_owned(),
                },
                None => return reply(StatusCode::BAD_REQUEST, r#"{"message": "no queue"}"#),
            }
        }
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, ""),
    };
    let (answer, answered) = oneshot::channel();
    if writes.send((write, answer)).is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "");
    }
    answered
        .await
        .unwrap_or_else(|_| reply(StatusCode::SERVICE_UNAVAILABLE, ""))
}

fn reply(status: StatusCode, json: &str) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    if !json.is_empty() {
        response = response.header("content-type", "application/json");
    }
    response
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}

/// The writer thread: everything queued so far in one transaction, answered after its commit.
fn write_in_groups(connection: &Connection, queued: mpsc::Receiver<Queued>) {
    while let Ok(first) = queued.recv() {
        let group: Vec<Queued> = std::iter::once(first).chain(queued.try_iter()).collect();
        connection.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let answers: Vec<_> = group
            .into_iter()
            .map(|(write, answer)| (run(connection, write), answer))
            .collect();
        let committed = connection.execute_batch("COMMIT").is_ok();
        for (response, answer) in answers {
            let response = match committed {
                true => response,
                false => reply(StatusCode::INTERNAL_SERVER_ERROR, ""),
            };
            let _ = answer.send(response);
        }
    }
}

fn run(connection: &Connection, write: Write) -> Response<Full<Bytes>> {
    let outcome = match write {
        Write::Submit { queue, data } => submit(connection, &queue, &data),
        Write::Claim { queue } => claim(connection, &queue),
    };
    outcome.unwrap_or_else(|error| reply(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()))
}

fn submit(
    connection: &Connection,
    queue: &str,
    data: &str,
) -> rusqlite::Result<Response<Full<Bytes>>> {
    let job_id = uuid::Uuid::new_v4().to_string();
    connection
        .prepare_cached(
            "INSERT INTO jobs (job_id, queue, state, data) VALUES (?1, ?2, 'waiting', ?3)",
        )?
        .execute([&job_id, queue, data])?;
    Ok(reply(
        StatusCode::OK,
        &format!(r#"{{"job_id": "{job_id}"}}"#),
    ))
}

/// The oldest waiting job of `queue` becomes `running` in the statement that finds it.
fn claim(connection: &Connection, queue: &str) -> rusqlite::Result<Response<Full<Bytes>>> {
    let claimed: Option<(String, String)> = connection
        .prepare_cached(
            "UPDATE jobs SET state = 'running' WHERE seq = (SELECT seq FROM jobs
               WHERE queue = ?1 AND state = 'waiting' ORDER BY seq LIMIT 1)
             RETURNING job_id, data",
        )?
        .query_row([queue], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((job_id, data)) = claimed else {
        return Ok(reply(StatusCode::NO_CONTENT, ""));
    };
    let mut job: Map<String, Value> = serde_json::from_str(&data).unwrap_or_default();
    job.insert("job_id".into(), Value::String(job_id));
    Ok(reply(StatusCode::OK, &serde_json::to_string(&job).unwrap()))
}
