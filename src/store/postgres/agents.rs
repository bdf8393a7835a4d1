//! Agents, their provision history, advertised queues and wait-time samples on
//! PostgreSQL, with SQLite's rules (`store/agents.rs`, `store/pages.rs`). An agent's
//! document is merged in Rust under its row's lock, as SQLite's writer merges it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tokio_postgres::Row;

use super::PostgresBackend;
use crate::job::time;
use crate::store::agents::KEPT_HISTORY;
use crate::store::agents::{AgentFields, ProvisionLogEntry};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::pages::ProvisionAttempt;

const AGENT_COLUMNS: &str = "name, fields::text, updated_at";

/// An agent from a row of `AGENT_COLUMNS`.
fn agent(row: &Row) -> Result<AgentFields> {
    Ok(AgentFields {
        name: row.get(0),
        fields: serde_json::from_str(row.get(1))?,
        updated_at: row.get(2),
    })
}

impl backend::Agents for PostgresBackend {
    async fn report_agent(
        &self,
        name: &str,
        fields: Map<String, Value>,
        log: Vec<String>,
    ) -> Result<()> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // The row exists before it is locked, so two first reports at once merge too; a
        // new agent takes its place in the listing here.
        let create = transaction
            .prepare_cached(
                "INSERT INTO agents (name, fields, log, updated_at) VALUES ($1, '{}', '[]', $2)
                 ON CONFLICT (name) DO NOTHING",
            )
            .await?;
        transaction.execute(&create, &[&name, &time::now()]).await?;
        let select = transaction
            .prepare_cached("SELECT fields::text, log::text FROM agents WHERE name = $1 FOR UPDATE")
            .await?;
        let stored = transaction.query_one(&select, &[&name]).await?;
        let mut merged: Map<String, Value> = serde_json::from_str(stored.get(0))?;
        let mut kept_log: Vec<String> = serde_json::from_str(stored.get(1))?;
        merged.extend(fields);
        kept_log.extend(log);
        let excess = kept_log.len().saturating_sub(KEPT_HISTORY as usize);
        kept_log.drain(..excess);
        let update = transaction
            .prepare_cached(
                "UPDATE agents SET fields = $2::text::json, log = $3::text::json, updated_at = $4
                 WHERE name = $1",
            )
            .await?;
        transaction
            .execute(
                &update,
                &[
                    &name,
                    &serde_json::to_string(&merged)?,
                    &serde_json::to_string(&kept_log)?,
                    &time::now(),
                ],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentFields>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY seq"))
            .await?;
        client
            .query(&select, &[])
            .await?
            .iter()
            .map(agent)
            .collect()
    }

    async fn agent(&self, name: &str) -> Result<Option<AgentFields>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE name = $1"
            ))
            .await?;
        let row = client.query_opt(&select, &[&name]).await?;
        row.as_ref().map(agent).transpose()
    }

    async fn agents_on_queue(&self, queue: &str) -> Result<Vec<AgentFields>> {
        let client = self.connection().await?;
        // Queues that are not a list match nothing (SQLite's json_each would take a lone
        // string as a list of one; agents report lists).
        let select = client
            .prepare_cached(&format!(
                "SELECT {AGENT_COLUMNS} FROM agents
                 WHERE EXISTS (
                     SELECT 1 FROM json_array_elements_text(
                         CASE WHEN json_typeof(fields -> 'queues') = 'array'
                              THEN fields -> 'queues' END) AS served
                     WHERE served = $1)
                 ORDER BY seq"
            ))
            .await?;
        client
            .query(&select, &[&queue])
            .await?
            .iter()
            .map(agent)
            .collect()
    }

    async fn record_provision(&self, name: &str, entry: ProvisionLogEntry) -> Result<bool> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let provisioned = transaction
            .prepare_cached("SELECT status ->> 'provision' IS NOT NULL FROM jobs WHERE job_id = $1")
            .await?;
        let provisioned: Option<bool> = transaction
            .query_opt(&provisioned, &[&entry.job_id])
            .await?
            .map(|row| row.get(0));
        if entry.exit_code == 0 && provisioned == Some(false) {
            let exists = transaction
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM agents WHERE name = $1)")
                .await?;
            return Ok(transaction.query_one(&exists, &[&name]).await?.get(0));
        }
        let insert = transaction
            .prepare_cached(
                "INSERT INTO provision_logs (agent, job_id, exit_code, detail, timestamp)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        transaction
            .execute(
                &insert,
                &[
                    &name,
                    &entry.job_id,
                    &entry.exit_code,
                    &entry.detail,
                    &time::now(),
                ],
            )
            .await?;
        let trim = transaction
            .prepare_cached(
                "DELETE FROM provision_logs WHERE agent = $1 AND seq <= (
                     SELECT seq FROM provision_logs WHERE agent = $1
                     ORDER BY seq DESC OFFSET $2 LIMIT 1)",
            )
            .await?;
        transaction.execute(&trim, &[&name, &KEPT_HISTORY]).await?;
        let select = transaction
            .prepare_cached("SELECT fields::text FROM agents WHERE name = $1 FOR UPDATE")
            .await?;
        let Some(row) = transaction.query_opt(&select, &[&name]).await? else {
            transaction.commit().await?;
            return Ok(false);
        };
        let mut fields: Map<String, Value> = serde_json::from_str(row.get(0))?;
        extend_streak(&mut fields, entry.exit_code == 0);
        let update = transaction
            .prepare_cached("UPDATE agents SET fields = $2::text::json WHERE name = $1")
            .await?;
        transaction
            .execute(&update, &[&name, &serde_json::to_string(&fields)?])
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn provision_history(&self, agent: &str) -> Result<Vec<ProvisionAttempt>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT job_id, exit_code, detail, timestamp FROM provision_logs
                 WHERE agent = $1 ORDER BY seq DESC",
            )
            .await?;
        let rows = client.query(&select, &[&agent]).await?;
        Ok(rows
            .iter()
            .map(|row| ProvisionAttempt {
                job_id: row.get(0),
                exit_code: row.get(1),
                detail: row.get(2),
                timestamp: row.get(3),
            })
            .collect())
    }

    async fn agent_log(&self, agent: &str) -> Result<Vec<String>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT log::text FROM agents WHERE name = $1")
            .await?;
        match client.query_opt(&select, &[&agent]).await? {
            Some(row) => Ok(serde_json::from_str(row.get(0))?),
            None => Ok(Vec::new()),
        }
    }

    async fn advertise_queues(&self, queues: BTreeMap<String, String>) -> Result<()> {
        let (names, descriptions): (Vec<String>, Vec<String>) = queues.into_iter().unzip();
        let client = self.connection().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO queues (name, description, updated_at)
                 SELECT name, description, $3 FROM unnest($1::text[], $2::text[])
                     AS advertised (name, description)
                 ON CONFLICT (name) DO UPDATE SET
                     description = excluded.description, updated_at = excluded.updated_at",
            )
            .await?;
        client
            .execute(&upsert, &[&names, &descriptions, &time::now()])
            .await?;
        Ok(())
    }

    async fn queue_descriptions(&self) -> Result<BTreeMap<String, String>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT name, coalesce(description, '') FROM queues")
            .await?;
        let rows = client.query(&select, &[]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn set_images(&self, images: BTreeMap<String, Map<String, Value>>) -> Result<()> {
        let mut queues = Vec::new();
        let mut lists = Vec::new();
        for (queue, list) in images {
            queues.push(queue);
            lists.push(serde_json::to_string(&list)?);
        }
        let client = self.connection().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO queues (name, images)
                 SELECT name, images::json FROM unnest($1::text[], $2::text[])
                     AS given (name, images)
                 ON CONFLICT (name) DO UPDATE SET images = excluded.images",
            )
            .await?;
        client.execute(&upsert, &[&queues, &lists]).await?;
        Ok(())
    }

    async fn images(&self, queue: &str) -> Result<Map<String, Value>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT images::text FROM queues WHERE name = $1")
            .await?;
        let row = client.query_opt(&select, &[&queue]).await?;
        super::object(row.as_ref().and_then(|row| row.get(0)))
    }

    async fn wait_times(&self, queues: Vec<String>) -> Result<BTreeMap<String, Vec<i64>>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT queue, seconds FROM wait_times
                 WHERE cardinality($1::text[]) = 0 OR queue = ANY ($1)
                 ORDER BY queue, seconds",
            )
            .await?;
        let mut samples: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for row in client.query(&select, &[&queues]).await? {
            samples.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(samples)
    }
}

/// Counts a provision attempt into the agent's streak: one more of the same outcome, or
/// the first of the other.
fn extend_streak(fields: &mut Map<String, Value>, passed: bool) {
    let outcome = if passed { "pass" } else { "fail" };
    let count = match fields.get("provision_streak_type") {
        Some(Value::String(streak)) if streak == outcome => {
            fields
                .get("provision_streak_count")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1
        }
        _ => 1,
    };
    fields.insert("provision_streak_type".into(), outcome.into());
    fields.insert("provision_streak_count".into(), count.into());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::backend::{Agents, Jobs};
    use crate::store::jobs::{NewJob, ResultUpdate};
    use crate::store::postgres::testing;

    fn fields(value: Value) -> Map<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[tokio::test]
    async fn reports_merge_into_agents_listed_in_order_and_found_by_queue() {
        let (_cluster, db) = testing::backend().await;
        db.report_agent(
            "b",
            fields(json!({"queues": ["q", "r"], "state": "waiting"})),
            vec![],
        )
        .await
        .unwrap();
        db.report_agent("a", fields(json!({"queues": "q"})), vec![])
            .await
            .unwrap();
        let lines: Vec<String> = (0..150).map(|n| n.to_string()).collect();
        db.report_agent("b", fields(json!({"state": "test"})), lines)
            .await
            .unwrap();
        let agents = db.agents().await.unwrap();
        let names: Vec<&str> = agents.iter().map(|agent| agent.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "in the order they first reported");
        assert_eq!(
            Value::Object(agents[0].fields.clone()),
            json!({"queues": ["q", "r"], "state": "test"})
        );
        let on_q = db.agents_on_queue("q").await.unwrap();
        assert_eq!(on_q.len(), 1, "queues that are not a list serve nothing");
        assert_eq!(on_q[0].name, "b");
        let log = db.agent_log("b").await.unwrap();
        assert_eq!((log.len(), log[0].as_str()), (100, "50"));
        assert!(db.agent("nobody").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn provision_attempts_keep_a_streak_and_a_skipped_provision_is_none() {
        let (_cluster, db) = testing::backend().await;
        db.report_agent("a", Map::new(), vec![]).await.unwrap();
        for id in ["skipped", "ran"] {
            db.insert_job(NewJob::plain(id, "q", 0)).await.unwrap();
        }
        let ran = ResultUpdate {
            status: Some(fields(json!({"provision": 0}))),
            ..ResultUpdate::default()
        };
        db.update_result("ran", ran).await.unwrap();
        let attempt = |job: &str, exit_code: i64| ProvisionLogEntry {
            job_id: job.into(),
            exit_code,
            detail: None,
        };
        assert!(db
            .record_provision("a", attempt("skipped", 0))
            .await
            .unwrap());
        assert!(db.provision_history("a").await.unwrap().is_empty());
        for exit_code in [0, 0, 1, 1, 1] {
            db.record_provision("a", attempt("ran", exit_code))
                .await
                .unwrap();
        }
        let agent = db.agent("a").await.unwrap().unwrap();
        assert_eq!(agent.fields["provision_streak_type"], json!("fail"));
        assert_eq!(agent.fields["provision_streak_count"], json!(3));
        let history = db.provision_history("a").await.unwrap();
        let codes: Vec<i64> = history.iter().map(|attempt| attempt.exit_code).collect();
        assert_eq!(codes, [1, 1, 1, 0, 0], "newest first");
        assert!(!db
            .record_provision("nobody", attempt("ran", 1))
            .await
            .unwrap());
        for _ in 0..120 {
            db.record_provision("a", attempt("ran", 0)).await.unwrap();
        }
        assert_eq!(db.provision_history("a").await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn queues_keep_descriptions_images_and_wait_times() {
        let (_cluster, db) = testing::backend().await;
        db.advertise_queues([("q".to_string(), "the q".to_string())].into())
            .await
            .unwrap();
        db.set_images([("r".to_string(), fields(json!({"img": "url"})))].into())
            .await
            .unwrap();
        let descriptions = db.queue_descriptions().await.unwrap();
        assert_eq!(descriptions["q"], "the q");
        assert_eq!(descriptions["r"], "");
        assert_eq!(
            Value::Object(db.images("r").await.unwrap()),
            json!({"img": "url"})
        );
        assert!(db.images("q").await.unwrap().is_empty());
        for queue in ["q", "r"] {
            db.insert_job(NewJob {
                job_id: queue.into(),
                queue: queue.into(),
                priority: 0,
                awaits_attachments: false,
                exclude_agents: Vec::new(),
                submitter: None,
                data: Map::new(),
            })
            .await
            .unwrap();
            db.claim_job(&[queue.to_string()], "a").await.unwrap();
        }
        assert_eq!(db.wait_times(Vec::new()).await.unwrap().len(), 2);
        let only_q = db.wait_times(vec!["q".into()]).await.unwrap();
        assert_eq!(only_q.keys().collect::<Vec<_>>(), ["q"]);
    }
}
