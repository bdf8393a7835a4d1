//! `multi`: a parent job that runs on several devices at once. Its provision submits one
//! child job per entry of `provision_data.jobs` (each marked `allocate` with this job as
//! its parent), waits until every child's agent has allocated its device, and records
//! their addresses in `job_list.json`; its runtest sees them as `DEVICE_IP_1…N`; its
//! cleanup cancels the children, which releases their devices.

use std::time::Duration;

use serde_json::{json, Value};

use super::context::{Context, Failure, StageResult};
use super::serial::SerialLogger;
use super::stages::{pre_provision_hook, run_test_commands, test_environment};
use crate::api::{v1, Api};
use crate::job::JobState;

const JOB_LIST: &str = "job_list.json";
const CHECK_EVERY: Duration = Duration::from_secs(10);
const DEFAULT_ALLOCATION_TIMEOUT: u64 = 7200;
const TIMEOUT: Duration = Duration::from_secs(15);

/// The Testflinger server the children go to.
struct Server {
    api: Api,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn new(context: &Context) -> Result<Server, Failure> {
        let address = context
            .config_text("testflinger_server")
            .filter(|a| a.starts_with("http"))
            .ok_or_else(|| {
                Failure::Provisioning("Config item testflinger_server URL for multi-device connectors must be specified and must start with http or https!".into())
            })?;
        let api = Api::new(&address).map_err(|e| Failure::Provisioning(e.to_string()))?;
        let runtime = super::web::runtime().map_err(|e| Failure::Provisioning(e.to_string()))?;
        Ok(Server { api, runtime })
    }

    fn submit(&self, job: &Value) -> Result<String, Failure> {
        let reply = self
            .runtime
            .block_on(self.api.send(v1::submit(job), TIMEOUT))
            .map_err(|_| {
                Failure::Provisioning("An error occurred while creating the job".into())
            })?;
        if !reply.status.is_success() {
            return Err(Failure::Provisioning(format!(
                "Unable to create job: {}",
                String::from_utf8_lossy(&reply.body).trim()
            )));
        }
        reply
            .json::<Value>()
            .ok()
            .and_then(|b| b.get("job_id")?.as_str().map(str::to_string))
            .ok_or_else(|| Failure::Provisioning("An error occurred while creating the job".into()))
    }

    /// The job's result (`{}` when it cannot be had).
    fn result(&self, job_id: &str) -> Value {
        self.runtime
            .block_on(self.api.call(v1::result(job_id), TIMEOUT))
            .unwrap_or_else(|_| json!({}))
    }

    fn state(&self, job_id: &str) -> String {
        self.result(job_id)
            .get("job_state")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    }

    /// Cancels the jobs; a job that already ended (400) is fine.
    fn cancel(&self, context: &Context, job_ids: &[String]) {
        for job_id in job_ids {
            let reply = self
                .runtime
                .block_on(self.api.call(v1::cancel(job_id), TIMEOUT));
            if let Err(error) = reply {
                if error.status().map(|s| s.as_u16()) != Some(400) {
                    context
                        .log
                        .error(&format!("Unable to cancel job: {job_id}"));
                }
            }
        }
    }
}

fn is_over(state: &str) -> bool {
    JobState::is_finished_name(state)
}

pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, false)?;
    let server = Server::new(context)?;
    let jobs = context
        .job
        .pointer("/provision_data/jobs")
        .and_then(Value::as_array)
        .filter(|jobs| !jobs.is_empty())
        .ok_or_else(|| {
            Failure::Provisioning(
                "You must specify a list of 'jobs' in the 'provision_data' section of your job."
                    .into(),
            )
        })?;
    let parent = context
        .job
        .get("job_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    context.log.info("Creating test jobs");
    let mut children = Vec::new();
    for job in jobs {
        let Some(fields) = job.as_object() else {
            context.log.error(&format!("Job is not a dict: {job}"));
            continue;
        };
        let mut child = fields.clone();
        child.insert("allocate_data".into(), json!({"allocate": true}));
        child.insert("parent_job_id".into(), json!(parent));
        match server.submit(&Value::Object(child)) {
            Ok(job_id) => {
                context.log.info(&format!("Created job {job_id}"));
                children.push(job_id);
            }
            Err(failure) => {
                server.cancel(context, &children);
                return Err(failure);
            }
        }
    }
    wait_for_allocation(context, &server, &parent, &children)?;
    let job_list: Vec<Value> = children
        .iter()
        .map(|job_id| json!({"job_id": job_id, "device_info": server.result(job_id).get("device_info")}))
        .collect();
    std::fs::write(JOB_LIST, Value::Array(job_list).to_string())
        .map_err(|e| Failure::Provisioning(format!("cannot write {JOB_LIST}: {e}")))?;
    Ok(0)
}

/// Waits until every child is `allocated`; a child that ends first, this job ending, or
/// the job's `allocation_timeout` cancels them all.
fn wait_for_allocation(
    context: &Context,
    server: &Server,
    parent: &str,
    children: &[String],
) -> Result<(), Failure> {
    let timeout = context
        .job
        .get("allocation_timeout")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ALLOCATION_TIMEOUT);
    let mut waiting: Vec<String> = children.to_vec();
    for check in 0..=timeout / CHECK_EVERY.as_secs() {
        if check > 0 {
            context.pause(CHECK_EVERY);
        }
        if is_over(&server.state(parent)) {
            server.cancel(context, children);
            return Err(Failure::Provisioning("Job cancelled or completed".into()));
        }
        let mut still = Vec::new();
        for child in &waiting {
            let state = server.state(child);
            if state == "allocated" {
                continue;
            }
            if is_over(&state) {
                context.log.error(&format!(
                    "Job {child} failed to allocate, cancelling remaining jobs"
                ));
                server.cancel(context, children);
                return Err(Failure::Provisioning(
                    "Unable to allocate all devices".into(),
                ));
            }
            still.push(child.clone());
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(());
        }
    }
    server.cancel(context, children);
    Err(Failure::Provisioning(
        "Timed out waiting for devices to allocate".into(),
    ))
}

fn job_list() -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(JOB_LIST).ok()?;
    serde_json::from_str::<Value>(&text)
        .ok()?
        .as_array()
        .cloned()
}

/// The test commands, in the usual test environment plus `DEVICE_IP_1…N` for the
/// allocated devices.
pub fn runtest(context: &Context) -> StageResult {
    context.log.info("BEGIN testrun");
    let Some(test_data) = context.job.get("test_data") else {
        return Err(Failure::Provisioning("the job has no test_data".into()));
    };
    let _serial = SerialLogger::start(context, "test-serial.log");
    let mut environment = test_environment(context, test_data);
    match job_list() {
        Some(devices) => {
            for (index, device) in devices.iter().enumerate() {
                if let Some(ip) = device
                    .pointer("/device_info/device_ip")
                    .and_then(Value::as_str)
                {
                    environment.push((format!("DEVICE_IP_{}", index + 1), ip.to_string()));
                }
            }
        }
        None => context
            .log
            .error("Unable to find multi-job data file, job_list.json not found"),
    }
    let status = run_test_commands(context, test_data, &environment)?;
    context.log.info("END testrun");
    Ok(status)
}

/// Cancels the children: their agents release the devices.
pub fn cleanup(context: &Context) -> StageResult {
    let server = Server::new(context)?;
    let children: Vec<String> = job_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| entry.get("job_id")?.as_str().map(str::to_string))
        .collect();
    server.cancel(context, &children);
    Ok(0)
}
