//! Agents: what each device host reports about itself, its provision history, the
//! queues agents advertise with descriptions and images, and queue wait times.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::store::agents::{AgentFields, ProvisionLogEntry};
use crate::store::backend::Agents as _;
use crate::store::error::Result;
use crate::store::open::{on_backend, Store};
use crate::store::pages::ProvisionAttempt;

impl Store {
    /// Creates or updates an agent: given fields replace stored ones, log lines are
    /// appended and only the last hundred kept.
    pub async fn report_agent(
        &self,
        name: &str,
        fields: Map<String, Value>,
        log: Vec<String>,
    ) -> Result<()> {
        on_backend!(self, db => db.report_agent(name, fields, log).await)
    }

    pub async fn agents(&self) -> Result<Vec<AgentFields>> {
        on_backend!(self, db => db.agents().await)
    }

    pub async fn agent(&self, name: &str) -> Result<Option<AgentFields>> {
        on_backend!(self, db => db.agent(name).await)
    }

    /// The agents whose reported queues include `queue`.
    pub async fn agents_on_queue(&self, queue: &str) -> Result<Vec<AgentFields>> {
        on_backend!(self, db => db.agents_on_queue(queue).await)
    }

    /// Records a provision attempt and updates the agent's pass/fail streak. Returns
    /// false when no agent has that name (the entry is kept anyway, as the reference does).
    /// Agents report a skipped provision as a success; a job that has no provision status
    /// (the phase did not run) is therefore no attempt, and is left out.
    pub async fn record_provision(&self, name: &str, entry: ProvisionLogEntry) -> Result<bool> {
        on_backend!(self, db => db.record_provision(name, entry).await)
    }

    /// Sets the description of each advertised queue.
    pub async fn advertise_queues(&self, queues: BTreeMap<String, String>) -> Result<()> {
        on_backend!(self, db => db.advertise_queues(queues).await)
    }

    /// `{queue: description}` for every known queue (advertised, or given images).
    pub async fn queue_descriptions(&self) -> Result<BTreeMap<String, String>> {
        on_backend!(self, db => db.queue_descriptions().await)
    }

    /// Replaces the image list of each given queue.
    pub async fn set_images(&self, images: BTreeMap<String, Map<String, Value>>) -> Result<()> {
        on_backend!(self, db => db.set_images(images).await)
    }

    pub async fn images(&self, queue: &str) -> Result<Map<String, Value>> {
        on_backend!(self, db => db.images(queue).await)
    }

    /// Wait-time samples (seconds from submission to dispatch) per queue, ascending;
    /// all queues when `queues` is empty.
    pub async fn wait_times(&self, queues: Vec<String>) -> Result<BTreeMap<String, Vec<i64>>> {
        on_backend!(self, db => db.wait_times(queues).await)
    }

    /// An agent's provision attempts, newest first.
    pub async fn provision_history(&self, agent: &str) -> Result<Vec<ProvisionAttempt>> {
        on_backend!(self, db => db.provision_history(agent).await)
    }

    /// The lines an agent posted in its reports (the last hundred are kept), oldest first.
    pub async fn agent_log(&self, agent: &str) -> Result<Vec<String>> {
        on_backend!(self, db => db.agent_log(agent).await)
    }
}
