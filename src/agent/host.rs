//! What running a job needs from the agent around it. `job.rs` and `recovery.rs` see the
//! agent only through this, so they do not depend on the agent's loop (which runs them),
//! and a job could be run by another host.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use super::metrics::Metrics;
use crate::api::{Api, Call};
use crate::job::Phase;

pub(super) trait JobHost {
    fn config(&self) -> &Config;
    fn api(&self) -> &Arc<Api>;
    fn metrics(&self) -> &Metrics;
    /// The first stop signal: end the job gracefully.
    fn stopping(&self) -> &CancellationToken;
    /// The second stop signal: do not wait for the cleanup either.
    fn stopping_now(&self) -> &CancellationToken;
    /// Whether the server is `tf serve` (cheap state checks).
    fn is_extended(&self) -> bool;

    /// Before a phase: reads the agent's record on the server and notes what an admin
    /// asked for meanwhile (a restart, offline or maintenance once the job is over).
    async fn check_in(&self);
    /// Reports the agent busy with `phase`.
    async fn report_phase(&self, phase: Phase);
    /// Updates the agent's record on the server.
    async fn report(&self, report: &Value);
    /// Sends `call`; a failure is only worth a log line.
    async fn quietly(&self, call: Call<()>);
    /// Takes the device out of service now and once the job is over, with why.
    async fn take_offline(&self, comment: &str);
}
