//! A stand-in for the server in the agent's in-process tests: it stores what it is sent,
//! answers a job's state as told, and fails on cue.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::delivery::{Batches, Transport};
use super::host::JobServer;
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
    /// The caller may not send this (403: a proxy letting only some paths through, or
    /// credentials that need an admin).
    Forbid,
    /// The request never ends (the agent dies while it waits).
    Hang,
}

/// Which requests the stand-in knows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Form {
    /// `tf serve`'s: single reports and fragment batches.
    #[default]
    WithBatches,
    /// A reference server's: a batch is a path it does not know (404).
    WithoutBatches,
}

#[derive(Default)]
pub struct StandIn {
    form: Form,
    faults: Mutex<VecDeque<Fault>>,
    /// Every report the server stored, in order (a resend is stored again); a batch's
    /// fragments one by one, under the batch's path.
    stored: Mutex<Vec<(String, Value)>>,
    /// How many batch requests it was sent, taken or not.
    batches_sent: Mutex<usize>,
    stored_one: Notify,
    /// What the server says the job's state is (`running` unless told otherwise).
    job_state: Mutex<Option<JobState>>,
    /// What the agent's outboxes learned of it.
    batches: Batches,
}

impl StandIn {
    pub fn failing(faults: &[Fault]) -> Arc<StandIn> {
        StandIn::answering(Form::WithBatches, faults)
    }

    pub fn answering(form: Form, faults: &[Fault]) -> Arc<StandIn> {
        Arc::new(StandIn {
            form,
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

    /// The paths of the stored reports, in order.
    pub fn paths(&self) -> Vec<String> {
        self.stored().into_iter().map(|(path, _)| path).collect()
    }

    pub fn batches_sent(&self) -> usize {
        *self.batches_sent.lock().unwrap()
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

fn status(path: &str, status: StatusCode) -> ApiError {
    ApiError::Status {
        method: Method::POST,
        path: path.to_string(),
        status,
        message: String::new(),
    }
}

impl StandIn {
    /// Answers a request as the next fault says, storing `bodies` under `path` when the
    /// fault lets the request through.
    async fn answer(&self, path: &str, bodies: &[&Value]) -> Result<(), ApiError> {
        let fault = self.faults.lock().unwrap().pop_front();
        let store = || {
            let mut stored = self.stored.lock().unwrap();
            stored.extend(
                bodies
                    .iter()
                    .map(|body| (path.to_string(), (*body).clone())),
            );
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
            Some(Fault::Refuse) => Err(status(path, StatusCode::UNPROCESSABLE_ENTITY)),
            Some(Fault::Forbid) => Err(status(path, StatusCode::FORBIDDEN)),
            Some(Fault::Hang) => std::future::pending().await,
        }
    }
}

impl Transport for StandIn {
    async fn post(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.answer(path, &[body]).await
    }

    async fn post_batch(&self, path: &str, fragments: &[&Value]) -> Result<(), ApiError> {
        *self.batches_sent.lock().unwrap() += 1;
        if self.form == Form::WithoutBatches {
            return Err(status(path, StatusCode::NOT_FOUND));
        }
        self.answer(path, fragments).await
    }

    async fn upload(&self, path: &str, _: Upload) -> Result<(), ApiError> {
        self.post(path, &json!("upload")).await
    }

    fn batches(&self) -> &Batches {
        &self.batches
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
