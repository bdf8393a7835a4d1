//! The v1 protocol as types: every endpoint's path is written here once, as the template
//! the server's route table registers (`server/routes.rs`), and every client (agent, CLI,
//! multi-device connector) builds its requests from the same templates through the calls
//! below, so the server and its clients cannot drift apart.
//!
//! Each call is only a description (`api::Call`); `Api` and the CLI's `Session` send it,
//! each with its own idea of success.

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::body::{RequestBody, Upload};
use super::call::{Call, Json};
use super::reply::Reply;
use crate::job::{time, LogType, Phase};

/// The header by which `tf serve` tells clients which extensions it has (see
/// `docs/compatibility.md`); a reference server does not send it.
pub const EXTENSIONS_HEADER: &str = "tf-extensions";
/// `long-poll`: `wait=<seconds>` on `GET /v1/job` and on log reads.
/// `result-without-logs`: `GET /v1/result/<id>?logs=false`.
/// `refresh-token-renewal`: `POST /v1/oauth2/refresh?renew=true` may answer with a new
/// `refresh_token`.
/// `stop-waiting`: `POST /v1/agents/stop_waiting/<agent>` ends that agent's long-poll claim.
/// `log-batches`: `POST /v1/result/<id>/log/<type>/batch` takes a JSON array of fragments.
pub const EXTENSIONS: &str =
    "long-poll, result-without-logs, refresh-token-renewal, stop-waiting, log-batches";

/// A path template: `{name}` stands for one path segment, `{*name}` for the rest of the
/// path (slashes kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(&'static str);

impl Route {
    /// The template, as axum's router reads it.
    pub const fn template(self) -> &'static str {
        self.0
    }

    /// The concrete path: each placeholder in turn replaced by the next of `values`,
    /// percent-encoded so that an id or name stays one segment of this path.
    fn fill(self, values: &[&str]) -> String {
        let mut path = String::with_capacity(self.0.len() + 40);
        let mut values = values.iter();
        let mut rest = self.0;
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("a placeholder is closed");
            let placeholder = &rest[open + 1..close];
            let value = values.next().expect("a value for every placeholder");
            if placeholder.starts_with('*') {
                let segments: Vec<String> = value.split('/').map(encode_segment).collect();
                path.push_str(&segments.join("/"));
            } else {
                path.push_str(&encode_segment(value));
            }
            rest = &rest[close + 1..];
        }
        path.push_str(rest);
        debug_assert!(values.next().is_none(), "more values than placeholders");
        path
    }
}

/// Percent-encodes what a path segment may not hold as it is. An escape already in the
/// value (`%20`) is kept, as the reference's `requests` keeps it, so a name typed that way
/// reaches the server as before; `.` and `..` are encoded so that no proxy folds them.
fn encode_segment(value: &str) -> String {
    if value == "." || value == ".." {
        return value.replace('.', "%2E");
    }
    let bytes = value.as_bytes();
    let mut encoded = String::with_capacity(value.len());
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = byte == b'%'
            && bytes.len() > at + 2
            && bytes[at + 1].is_ascii_hexdigit()
            && bytes[at + 2].is_ascii_hexdigit();
        let plain = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte);
        if plain || escape {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A query string (`?a=1&b=2`), empty when there are no pairs.
fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, &value);
    }
    let query = serializer.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

/// Every route of the v1 API.
pub mod routes {
    use super::Route;

    /// `GET`: the version line (and the `tf-extensions` header).
    pub const VERSION: Route = Route("/v1");
    /// `POST` submits a job; `GET ?queue=…` claims one (agents).
    pub const JOBS: Route = Route("/v1/job");
    pub const JOB_SEARCH: Route = Route("/v1/job/search");
    pub const JOB: Route = Route("/v1/job/{job_id}");
    pub const JOB_ACTION: Route = Route("/v1/job/{job_id}/action");
    pub const JOB_ATTACHMENTS: Route = Route("/v1/job/{job_id}/attachments");
    pub const JOB_POSITION: Route = Route("/v1/job/{job_id}/position");
    pub const JOB_EVENTS: Route = Route("/v1/job/{job_id}/events");
    pub const RESULT: Route = Route("/v1/result/{job_id}");
    pub const ARTIFACT: Route = Route("/v1/result/{job_id}/artifact");
    pub const LOG: Route = Route("/v1/result/{job_id}/log/{log_type}");
    /// tf's addition: several fragments of one log in one request (a JSON array).
    pub const LOG_BATCH: Route = Route("/v1/result/{job_id}/log/{log_type}/batch");
    /// The pre-2024 log endpoints.
    pub const LEGACY_OUTPUT: Route = Route("/v1/result/{job_id}/output");
    pub const LEGACY_SERIAL_OUTPUT: Route = Route("/v1/result/{job_id}/serial_output");
    pub const AGENTS: Route = Route("/v1/agents/data");
    pub const AGENT: Route = Route("/v1/agents/data/{name}");
    pub const AGENT_QUEUES: Route = Route("/v1/agents/queues");
    pub const AGENT_IMAGES: Route = Route("/v1/agents/images");
    pub const QUEUE_IMAGES: Route = Route("/v1/agents/images/{queue}");
    pub const PROVISION_LOGS: Route = Route("/v1/agents/provision_logs/{name}");
    /// tf's addition: ends agent `name`'s waiting claim.
    pub const STOP_WAITING: Route = Route("/v1/agents/stop_waiting/{name}");
    pub const WAIT_TIMES: Route = Route("/v1/queues/wait_times");
    pub const QUEUE_AGENTS: Route = Route("/v1/queues/{queue}/agents");
    pub const QUEUE_JOBS: Route = Route("/v1/queues/{queue}/jobs");
    pub const RESTRICTED_QUEUES: Route = Route("/v1/restricted-queues");
    pub const RESTRICTED_QUEUE: Route = Route("/v1/restricted-queues/{queue}");
    pub const CLIENT_PERMISSIONS: Route = Route("/v1/client-permissions");
    pub const CLIENT_PERMISSION: Route = Route("/v1/client-permissions/{client_id}");
    pub const SECRET: Route = Route("/v1/secrets/{client_id}/{*path}");
    pub const TOKEN: Route = Route("/v1/oauth2/token");
    pub const REFRESH: Route = Route("/v1/oauth2/refresh");
    pub const REVOKE: Route = Route("/v1/oauth2/revoke");
}

use routes::*;

// --- Jobs ---------------------------------------------------------------------------

/// `GET /v1`: the server's version line; its `tf-extensions` header says what it adds.
pub fn version() -> Call<Reply> {
    Call::get(VERSION.fill(&[]))
}

/// Submits a job definition; the answer carries `job_id`.
pub fn submit(job: &Value) -> Call<Reply> {
    Call::post(JOBS.fill(&[]), job)
}

/// Claims a job from `queues` (an agent's request); `wait` seconds of long-poll on a
/// server that offers it. The answer is the job, or empty when there is none.
pub fn claim(queues: &[String], wait: Option<u64>) -> Call<Json<Option<Value>>> {
    let pairs = queues
        .iter()
        .map(|queue| ("queue", queue.clone()))
        .chain(wait.map(|wait| ("wait", wait.to_string())));
    Call::get(format!("{}{}", JOBS.fill(&[]), query(pairs)))
}

/// The job's definition, as submitted.
pub fn job(job_id: &str) -> Call<Json<Value>> {
    Call::get(JOB.fill(&[job_id]))
}

/// The job's place in its queue.
pub fn position(job_id: &str) -> Call<Reply> {
    Call::get(JOB_POSITION.fill(&[job_id]))
}

/// Cancels the job.
pub fn cancel(job_id: &str) -> Call<Reply> {
    Call::post(JOB_ACTION.fill(&[job_id]), &json!({"action": "cancel"}))
}

/// Uploads the attachments archive of a job that awaits one.
pub fn upload_attachments(job_id: &str, upload: Upload) -> Call<Reply> {
    let path = JOB_ATTACHMENTS.fill(&[job_id]);
    Call::new(Method::POST, path, RequestBody::Upload(upload))
}

/// The path the agent downloads a job's attachments archive from.
pub fn attachments_path(job_id: &str) -> String {
    JOB_ATTACHMENTS.fill(&[job_id])
}

/// Relays the job's status events to its webhook.
pub fn job_events(job_id: &str, events: &Value) -> Call<()> {
    Call::post(JOB_EVENTS.fill(&[job_id]), events)
}

// --- Results ------------------------------------------------------------------------

/// The job's results, logs included.
pub fn result(job_id: &str) -> Call<Json<Value>> {
    Call::get(RESULT.fill(&[job_id]))
}

/// The job's results without the logs (`?logs=false`): its state and statuses, cheaply,
/// from a server that offers `result-without-logs`.
pub fn result_state(job_id: &str) -> Call<Json<Value>> {
    let without_logs = query([("logs", "false".to_string())]);
    Call::get(format!("{}{without_logs}", RESULT.fill(&[job_id])))
}

/// Replaces parts of the job's results (state, statuses, device info).
pub fn post_result(job_id: &str, report: &Value) -> Call<()> {
    Call::post(result_path(job_id), report)
}

/// Where a job's results are posted (kept by the agent's outbox until delivered).
pub fn result_path(job_id: &str) -> String {
    RESULT.fill(&[job_id])
}

/// Where one of the job's log fragments is posted.
pub fn log_path(job_id: &str, log_type: LogType) -> String {
    LOG.fill(&[job_id, log_type.as_str()])
}

/// One piece of a job's log, numbered job-wide per log type (a resend with the same
/// number is stored once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFragment {
    pub fragment_number: i64,
    /// When the agent read it (ISO 8601).
    pub timestamp: String,
    pub phase: Phase,
    pub log_data: String,
}

impl LogFragment {
    /// Fragment `number` of a log: `text` printed during `phase`, stamped now.
    pub fn now(number: u64, phase: Phase, text: &str) -> LogFragment {
        LogFragment {
            fragment_number: number as i64,
            timestamp: time::render_micros(time::now()),
            phase,
            log_data: text.to_string(),
        }
    }

    /// The body of its POST.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("fragments serialize")
    }
}

/// Posts a fragment of the job's log of `log_type`.
pub fn post_log(job_id: &str, log_type: LogType, fragment: &LogFragment) -> Call<()> {
    Call::post(log_path(job_id, log_type), &fragment.to_json())
}

/// Where several of the job's log fragments of `log_type` are posted in one request, as a
/// JSON array (tf's `log-batches`; a reference server answers 404).
pub fn log_batch_path(job_id: &str, log_type: LogType) -> String {
    LOG_BATCH.fill(&[job_id, log_type.as_str()])
}

/// The most fragments one batch may hold (`tf serve` refuses more with a 413).
pub const MAX_BATCH_FRAGMENTS: usize = 1000;

/// Posts several log fragments in one request to `batch_path` (from `log_batch_path`):
/// each as `post_log` sends it alone (the agent's outbox keeps them so until delivered).
/// `tf serve` stores all of them or, refusing one, none.
pub fn post_log_batch(batch_path: &str, fragments: &[&Value]) -> Call<()> {
    let body = serde_json::to_vec(fragments).expect("JSON values serialize");
    Call::new(
        Method::POST,
        batch_path.to_string(),
        RequestBody::Json(body.into()),
    )
}

/// The query of a log read: from which fragment, timestamp and phase, and how long to
/// wait for news on a server that long-polls.
#[derive(Debug, Default, Clone)]
pub struct LogQuery<'a> {
    pub start_fragment: Option<i64>,
    pub start_timestamp: Option<&'a str>,
    pub phase: Option<Phase>,
    pub wait: Option<u64>,
}

/// Reads the job's log of `log_type`.
pub fn log(job_id: &str, log_type: LogType, wanted: &LogQuery) -> Call<Json<Value>> {
    let pairs = [
        (
            "start_fragment",
            wanted.start_fragment.map(|n| n.to_string()),
        ),
        (
            "start_timestamp",
            wanted.start_timestamp.map(str::to_string),
        ),
        ("phase", wanted.phase.map(|phase| phase.to_string())),
        ("wait", wanted.wait.map(|w| w.to_string())),
    ];
    let pairs = pairs
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)));
    Call::get(format!("{}{}", log_path(job_id, log_type), query(pairs)))
}

/// Where the job's artifact archive is uploaded to and downloaded from.
pub fn artifact_path(job_id: &str) -> String {
    ARTIFACT.fill(&[job_id])
}

// --- Agents -------------------------------------------------------------------------

/// Every agent's record.
pub fn agents() -> Call<Json<Value>> {
    Call::get(AGENTS.fill(&[]))
}

/// Agent `name`'s record.
pub fn agent(name: &str) -> Call<Json<Value>> {
    Call::get(AGENT.fill(&[name]))
}

/// Updates agent `name`'s record (state, comment, job, description).
pub fn report_agent(name: &str, report: &Value) -> Call<()> {
    Call::post(AGENT.fill(&[name]), report)
}

/// The queues agents advertise, with their descriptions.
pub fn queues() -> Call<Json<Value>> {
    Call::get(AGENT_QUEUES.fill(&[]))
}

/// Advertises queues (`{name: description}`).
pub fn advertise_queues(queues: &Value) -> Call<()> {
    Call::post(AGENT_QUEUES.fill(&[]), queues)
}

/// Advertises images (`{queue: {image: provision data}}`).
pub fn advertise_images(images: &Value) -> Call<()> {
    Call::post(AGENT_IMAGES.fill(&[]), images)
}

/// The images advertised for `queue`.
pub fn images(queue: &str) -> Call<Json<Value>> {
    Call::get(QUEUE_IMAGES.fill(&[queue]))
}

/// Where agent `name` posts the outcome of each provisioning.
pub fn provision_log_path(name: &str) -> String {
    PROVISION_LOGS.fill(&[name])
}

/// Ends agent `name`'s waiting claim (tf's addition).
pub fn stop_waiting(name: &str) -> Call<()> {
    Call::post(STOP_WAITING.fill(&[name]), &json!({}))
}

// --- Queues -------------------------------------------------------------------------

/// The agents that serve `queue`.
pub fn queue_agents(queue: &str) -> Call<Json<Value>> {
    Call::get(QUEUE_AGENTS.fill(&[queue]))
}

/// The jobs in `queue`.
pub fn queue_jobs(queue: &str) -> Call<Json<Value>> {
    Call::get(QUEUE_JOBS.fill(&[queue]))
}

// --- Clients and secrets ------------------------------------------------------------

/// Every client's permissions, or one client's.
pub fn client_permissions(client_id: Option<&str>) -> Call<Json<Value>> {
    Call::get(match client_id {
        Some(id) => CLIENT_PERMISSION.fill(&[id]),
        None => CLIENT_PERMISSIONS.fill(&[]),
    })
}

/// Creates or changes a client's permissions.
pub fn put_client_permissions(client_id: &str, permissions: &Value) -> Call<Reply> {
    let path = CLIENT_PERMISSION.fill(&[client_id]);
    Call::new(Method::PUT, path, RequestBody::json(permissions))
}

/// Removes a client.
pub fn delete_client(client_id: &str) -> Call<Reply> {
    let path = CLIENT_PERMISSION.fill(&[client_id]);
    Call::new(Method::DELETE, path, RequestBody::Empty)
}

/// Stores a secret at `path` for `client_id`.
pub fn put_secret(client_id: &str, path: &str, secret: &Value) -> Call<Reply> {
    let path = SECRET.fill(&[client_id, path]);
    Call::new(Method::PUT, path, RequestBody::json(secret))
}

/// Removes the secret at `path`.
pub fn delete_secret(client_id: &str, path: &str) -> Call<Reply> {
    let path = SECRET.fill(&[client_id, path]);
    Call::new(Method::DELETE, path, RequestBody::Empty)
}

/// `POST /v1/oauth2/token`, with the client's credentials as basic auth.
pub fn token_path() -> String {
    TOKEN.fill(&[])
}

/// `POST /v1/oauth2/refresh`; `renew` asks tf for a successor refresh token.
pub fn refresh_path(renew: bool) -> String {
    let path = REFRESH.fill(&[]);
    if renew {
        format!("{path}{}", query([("renew", "true".to_string())]))
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_in_order_and_encoded() {
        assert_eq!(LOG.fill(&["j1", "serial"]), "/v1/result/j1/log/serial");
        assert_eq!(
            log_batch_path("j1", LogType::Output),
            "/v1/result/j1/log/output/batch"
        );
        assert_eq!(JOB.fill(&["../agents"]), "/v1/job/..%2Fagents");
        assert_eq!(JOB.fill(&["a b?c#d"]), "/v1/job/a%20b%3Fc%23d");
        assert_eq!(
            SECRET.fill(&["me", "lab/key 1"]),
            "/v1/secrets/me/lab/key%201"
        );
        // Escapes typed by the user pass as they are; `%` alone does not.
        assert_eq!(
            SECRET.fill(&["me", "a%20b%zz%"]),
            "/v1/secrets/me/a%20b%25zz%25"
        );
        assert_eq!(JOB.fill(&[".."]), "/v1/job/%2E%2E");
    }

    #[test]
    fn queries_are_encoded_and_left_out_when_empty() {
        let claim = claim(&["a b".into(), "c&d".into()], Some(30));
        assert_eq!(claim.path, "/v1/job?queue=a+b&queue=c%26d&wait=30");
        assert_eq!(result("j").path, "/v1/result/j");
        assert_eq!(result_state("j").path, "/v1/result/j?logs=false");
        let wanted = LogQuery {
            start_fragment: Some(0),
            phase: Some(Phase::Test),
            ..LogQuery::default()
        };
        assert_eq!(
            log("j", LogType::Output, &wanted).path,
            "/v1/result/j/log/output?start_fragment=0&phase=test"
        );
        assert_eq!(refresh_path(true), "/v1/oauth2/refresh?renew=true");
    }
}
