//! A stand-in for the server in the agent's in-process tests: it stores what it is sent,
//! answers a job's state as told, and fails on cue.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::host::JobServer;
use super::outbox::Transport;
use crate::api::{ApiError, Upload};
use crate::job::JobState;

/// What the stand-in does with the next request.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// None: the server stores the report and says so.
    Store,
    /// No answer: the server is away.
    Away,
    /// The server stores the report, but its answer is lost.
    LostAnswer,
    /// The server refuses the report for good.
    Refuse,
    /// The request never ends (the agent dies while it waits).
    Hang,
}

#[derive(Default)]
pub struct StandIn {
    faults: Mutex<VecDeque<Fault>>,
    /// Every report the server stored, in order (a resend is stored again).
    stored: Mutex<Vec<(String, Value)>>,
    stored_one: Notify,
    /// What the server says the job's state is (`running` unless told otherwise).
    job_state: Mutex<Option<JobState>>,
}

impl StandIn {
    pub fn failing(faults: &[Fault]) -> Arc<StandIn> {
        Arc::new(StandIn {
            faults: Mutex::new(faults.iter().copied().collect()),
            ..StandIn::default()
        })
    }

    /// From now on the server says the job is in `state`.
    pub fn set_job_state(&self, state: JobState) {
        *self.job_state.lock().unwrap() = Some(state);
    }

    pub fn stored(&self) -> Vec<(String, Value)> {
        self.stored.lock().unwrap().clone()
    }

    pub fn fragment_numbers(&self) -> Vec<u64> {
        self.stored()
            .iter()
            .filter_map(|(_, body)| body["fragment_number"].as_u64())
            .collect()
    }

    pub async fn stored_count(&self, count: usize) {
        while self.stored.lock().unwrap().len() < count {
            self.stored_one.notified().await;
        }
    }
}

fn away() -> ApiError {
    ApiError::Unreachable {
        url: "http://stand-in".into(),
        reason: "Connection refused".into(),
    }
}

impl Transport for StandIn {
    async fn post(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        let fault = self.faults.lock().unwrap().pop_front();
        let store = || {
            self.stored
                .lock()
                .unwrap()
                .push((path.to_string(), body.clone()));
            self.stored_one.notify_waiters();
        };
        match fault {
            None | Some(Fault::Store) => {
                store();
                Ok(())
            }
            Some(Fault::Away) => Err(away()),
            Some(Fault::LostAnswer) => {
                store();
                Err(away())
            }
            Some(Fault::Refuse) => Err(ApiError::Status {
                method: Method::POST,
                path: path.to_string(),
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "refused".into(),
            }),
            Some(Fault::Hang) => std::future::pending().await,
        }
    }

    async fn upload(&self, path: &str, _: Upload) -> Result<(), ApiError> {
        self.post(path, &json!("upload")).await
    }
}

impl JobServer for StandIn {
    fn base(&self) -> &str {
        "http://stand-in"
    }

    async fn job_state(&self, _: &str, _: bool) -> Option<JobState> {
        Some(self.job_state.lock().unwrap().unwrap_or(JobState::Running))
    }

    async fn download_attachments(&self, _: &str, _: &Path) -> Result<bool, ApiError> {
        Ok(false)
    }

    async fn relay_events(&self, job_id: &str, events: &Value) -> Result<(), ApiError> {
        self.post(&format!("events of {job_id}"), events).await
    }
}
