//! Agents on SQLite: their documents, logs and provision history, the queues they
//! advertise, and queue wait-time samples.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::SqliteBackend;
use crate::job::time::{self, Micros};
use crate::store::agents::{parse_agents, AgentFields, ProvisionLogEntry, KEPT_HISTORY};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::pages::ProvisionAttempt;

const AGENT_COLUMNS: &str = "name, fields, updated_at";

fn agent(row: &Row) -> rusqlite::Result<(String, String, Micros)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

impl backend::Agents for SqliteBackend {
    /// Creates or updates an agent: given fields replace stored ones, log lines are
    /// appended and only the last hundred kept.
    async fn report_agent(
        &self,
        name: &str,
        fields: Map<String, Value>,
        log: Vec<String>,
    ) -> Result<()> {
        let name = name.to_string();
        self.writer
            .write_one_statement(move |tx| {
                let stored: Option<(String, String)> = tx
                    .prepare_cached("SELECT fields, log FROM agents WHERE name = ?1")?
                    .query_row([&name], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                let (mut merged, mut kept_log): (Map<String, Value>, Vec<String>) = match stored {
                    Some((fields, log)) => {
                        (serde_json::from_str(&fields)?, serde_json::from_str(&log)?)
                    }
                    None => Default::default(),
                };
                merged.extend(fields);
                kept_log.extend(log);
                let excess = kept_log.len().saturating_sub(KEPT_HISTORY as usize);
                kept_log.drain(..excess);
                // An upsert, not a replace: the row keeps its place in the listing.
                tx.prepare_cached(
                    "INSERT INTO agents (name, fields, log, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET fields = ?2, log = ?3, updated_at = ?4",
                )?
                .execute(params![
                    name,
                    serde_json::to_string(&merged)?,
                    serde_json::to_string(&kept_log)?,
                    time::now()
                ])?;
                Ok(())
            })
            .await
    }
    async fn agents(&self) -> Result<Vec<AgentFields>> {
        let rows = self
            .readers
            .read(|db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents ORDER BY rowid"
                ))?;
                let rows = query.query_map([], agent)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        parse_agents(rows)
    }
    async fn agent(&self, name: &str) -> Result<Option<AgentFields>> {
        let name = name.to_string();
        let row = self
            .readers
            .lookup(move |db| {
                Ok(db
                    .prepare_cached(&format!(
                        "SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1"
                    ))?
                    .query_row([&name], agent)
                    .optional()?)
            })
            .await?;
        Ok(parse_agents(row.into_iter().collect())?.pop())
    }

    /// The agents whose reported queues include `queue`.
    async fn agents_on_queue(&self, queue: &str) -> Result<Vec<AgentFields>> {
        let queue = queue.to_string();
        let rows = self
            .readers
            .read(move |db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents
                     WHERE EXISTS (SELECT 1 FROM json_each(agents.fields, '$.queues') WHERE value = ?1)
                     ORDER BY rowid"
                ))?;
                let rows = query.query_map([&queue], agent)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        parse_agents(rows)
    }

    /// Records a provision attempt and updates the agent's pass/fail streak. Returns
    /// false when no agent has that name (the entry is kept anyway, as the reference does).
    /// Agents report a skipped provision as a success; a job that has no provision status
    /// (the phase did not run) is therefore no attempt, and is left out.
    async fn record_provision(&self, name: &str, entry: ProvisionLogEntry) -> Result<bool> {
        let name = name.to_string();
        self.writer
            .write(move |tx| {
                let provisioned: Option<bool> = tx
                    .prepare_cached(
                        "SELECT status ->> '$.provision' IS NOT NULL FROM jobs WHERE job_id = ?1",
                    )?
                    .query_row([&entry.job_id], |row| row.get(0))
                    .optional()?;
                if entry.exit_code == 0 && provisioned == Some(false) {
                    return Ok(tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM agents WHERE name = ?1)")?
                        .query_row([&name], |row| row.get(0))?);
                }
                tx.prepare_cached(
                    "INSERT INTO provision_logs (agent, job_id, exit_code, detail, timestamp)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![name, entry.job_id, entry.exit_code, entry.detail, time::now()])?;
                tx.prepare_cached(
                    "DELETE FROM provision_logs WHERE agent = ?1 AND seq NOT IN
                         (SELECT seq FROM provision_logs WHERE agent = ?1 ORDER BY seq DESC LIMIT ?2)",
                )?
                .execute(params![name, KEPT_HISTORY])?;
                let outcome = if entry.exit_code == 0 { "pass" } else { "fail" };
                let updated = tx
                    .prepare_cached(
                        "UPDATE agents SET fields = json_set(fields,
                             '$.provision_streak_type', ?2,
                             '$.provision_streak_count',
                             CASE WHEN fields ->> '$.provision_streak_type' = ?2
                                  THEN coalesce(fields ->> '$.provision_streak_count', 0) + 1
                                  ELSE 1 END)
                         WHERE name = ?1",
                    )?
                    .execute(params![name, outcome])?;
                Ok(updated > 0)
            })
            .await
    }

    /// Sets the description of each advertised queue.
    async fn advertise_queues(&self, queues: BTreeMap<String, String>) -> Result<()> {
        self.writer
            .write(move |tx| {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO queues (name, description, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET description = ?2, updated_at = ?3",
                )?;
                for (name, description) in &queues {
                    upsert.execute(params![name, description, time::now()])?;
                }
                Ok(())
            })
            .await
    }

    /// `{queue: description}` for every known queue (advertised, or given images).
    async fn queue_descriptions(&self) -> Result<BTreeMap<String, String>> {
        self.readers
            .read(|db| {
                let mut query =
                    db.prepare_cached("SELECT name, coalesce(description, '') FROM queues")?;
                let rows = query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    /// Replaces the image list of each given queue.
    async fn set_images(&self, images: BTreeMap<String, Map<String, Value>>) -> Result<()> {
        self.writer
            .write(move |tx| {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO queues (name, images) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET images = ?2",
                )?;
                for (queue, list) in &images {
                    upsert.execute(params![queue, serde_json::to_string(list)?])?;
                }
                Ok(())
            })
            .await
    }
    async fn images(&self, queue: &str) -> Result<Map<String, Value>> {
        let queue = queue.to_string();
        let images: Option<String> = self
            .readers
            .read(move |db| {
                Ok(db
                    .prepare_cached("SELECT images FROM queues WHERE name = ?1")?
                    .query_row([&queue], |row| row.get(0))
                    .optional()?
                    .flatten())
            })
            .await?;
        Ok(images
            .map(|text| serde_json::from_str(&text))
            .transpose()?
            .unwrap_or_default())
    }

    /// Wait-time samples (seconds from submission to dispatch) per queue, ascending;
    /// all queues when `queues` is empty.
    async fn wait_times(&self, queues: Vec<String>) -> Result<BTreeMap<String, Vec<i64>>> {
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(
                    "SELECT queue, seconds FROM wait_times ORDER BY queue, seconds",
                )?;
                let mut samples: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                let mut rows = query.query([])?;
                while let Some(row) = rows.next()? {
                    let queue: String = row.get(0)?;
                    if queues.is_empty() || queues.contains(&queue) {
                        samples.entry(queue).or_default().push(row.get(1)?);
                    }
                }
                Ok(samples)
            })
            .await
    }

    /// An agent's provision attempts, newest first.
    async fn provision_history(&self, agent: &str) -> Result<Vec<ProvisionAttempt>> {
        let agent = agent.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(
                    "SELECT job_id, exit_code, detail, timestamp FROM provision_logs
                     WHERE agent = ?1 ORDER BY seq DESC",
                )?;
                let attempts = query.query_map([&agent], |row| {
                    Ok(ProvisionAttempt {
                        job_id: row.get(0)?,
                        exit_code: row.get(1)?,
                        detail: row.get(2)?,
                        timestamp: row.get(3)?,
                    })
                })?;
                Ok(attempts.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    /// The lines an agent posted in its reports (the last hundred are kept), oldest first.
    async fn agent_log(&self, agent: &str) -> Result<Vec<String>> {
        let agent = agent.to_string();
        let log: Option<String> = self
            .readers
            .read(move |db| {
                Ok(db
                    .prepare_cached("SELECT log FROM agents WHERE name = ?1")?
                    .query_row([&agent], |row| row.get(0))
                    .optional()?)
            })
            .await?;
        Ok(match log {
            Some(text) => serde_json::from_str(&text)?,
            None => Vec::new(),
        })
    }
}
