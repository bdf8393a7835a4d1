//! Job status events, sent only when the job names a webhook. Each post carries the
//! whole list so far, as the reference's does. Posts are best effort and not spooled (a
//! later post repeats every earlier event), sent in order by a task of their own so a
//! slow webhook never holds the job up.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::host::JobServer;
use crate::job::{time, JobDefinition};

pub struct Events {
    sender: Option<mpsc::UnboundedSender<Value>>,
    envelope: Value,
    events: Vec<Value>,
}

impl Events {
    pub fn new(
        server: &Arc<impl JobServer>,
        agent_id: &str,
        job: &JobDefinition,
        job_id: &str,
    ) -> Events {
        let webhook = job.job_status_webhook.as_deref();
        let sender = webhook.map(|_| {
            let (sender, mut bodies) = mpsc::unbounded_channel::<Value>();
            let server = server.clone();
            let job_id = job_id.to_string();
            tokio::spawn(async move {
                while let Some(body) = bodies.recv().await {
                    if let Err(error) = server.relay_events(&job_id, &body).await {
                        tracing::warn!("cannot send the job event: {error}");
                    }
                }
            });
            sender
        });
        Events {
            sender,
            envelope: json!({
                "agent_id": agent_id,
                "job_queue": job.job_queue,
                "job_status_webhook": webhook,
            }),
            events: Vec::new(),
        }
    }

    pub fn emit(&mut self, name: &str, detail: &str) {
        let Some(sender) = &self.sender else {
            return;
        };
        self.events.push(json!({
            "event_name": name,
            "timestamp": time::render_micros(time::now()),
            "detail": detail,
        }));
        let mut body = self.envelope.clone();
        body["events"] = Value::Array(self.events.clone());
        let _ = sender.send(body);
    }
}
