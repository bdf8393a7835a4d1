//! Log fragments on PostgreSQL, with SQLite's rules (`store/logs.rs`, `store/pages.rs`):
//! one row per `(job, log type, fragment number)`, a resent number replacing the one
//! stored.

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::PostgresBackend;
use crate::job::time::{self, Micros};
use crate::job::{JobState, Phase};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::logs::{Fragment, FragmentQuery, PhaseLog};
use crate::store::pages::{LogsSoFar, PhaseSpan};

/// How many fragments `logs_so_far` fetches at a time while it spends its budget: a job
/// with gigabytes of output sends no more than its budget and one such batch.
const FRAGMENTS_PER_FETCH: i32 = 64;

impl backend::Logs for PostgresBackend {
    async fn insert_fragments(
        &self,
        job_id: &str,
        log_type: &str,
        fragments: Vec<Fragment>,
    ) -> Result<()> {
        // One statement for all of them, so all or none; a number given twice keeps its
        // last fragment, as SQLite's replacing each in turn does (one INSERT may not
        // change a row twice).
        let mut by_number: BTreeMap<i64, Fragment> = BTreeMap::new();
        for fragment in fragments {
            by_number.insert(fragment.fragment_number, fragment);
        }
        let numbers: Vec<i64> = by_number.keys().copied().collect();
        let phases: Vec<&str> = by_number.values().map(|f| f.phase.as_str()).collect();
        let timestamps: Vec<Micros> = by_number.values().map(|f| f.timestamp).collect();
        let texts: Vec<&str> = by_number.values().map(|f| f.log_data.as_str()).collect();
        let client = self.connection().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO log_fragments
                     (job_id, log_type, fragment_number, phase, timestamp, log_data, stored_at)
                 SELECT $1::text, $2::text, fragment.*, $7::bigint
                 FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[]) AS fragment
                 ON CONFLICT (job_id, log_type, fragment_number) DO UPDATE SET
                     phase = excluded.phase, timestamp = excluded.timestamp,
                     log_data = excluded.log_data, stored_at = excluded.stored_at",
            )
            .await?;
        client
            .execute(
                &insert,
                &[
                    &job_id,
                    &log_type,
                    &numbers,
                    &phases,
                    &timestamps,
                    &texts,
                    &time::now(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn read_log(
        &self,
        job_id: &str,
        log_type: &str,
        query: FragmentQuery,
        with_end: bool,
    ) -> Result<(Vec<PhaseLog>, bool)> {
        let client = self.connection().await?;
        let fragments = client
            .prepare_cached(
                "SELECT phase, fragment_number, log_data FROM log_fragments
                 WHERE job_id = $1 AND log_type = $2 AND fragment_number >= $3
                   AND timestamp >= $4 AND ($5::text IS NULL OR phase = $5)
                 ORDER BY fragment_number",
            )
            .await?;
        let state = client
            .prepare_cached("SELECT state FROM jobs WHERE job_id = $1")
            .await?;
        let start_timestamp = query.start_timestamp.unwrap_or(Micros::MIN);
        let values: [&(dyn ToSql + Sync); 5] = [
            &job_id,
            &log_type,
            &query.start_fragment,
            &start_timestamp,
            &query.phase,
        ];
        let read = client.query(&fragments, &values);
        // Both sent at once: one round trip.
        let (rows, ended) = if with_end {
            let job = [&job_id as &(dyn ToSql + Sync)];
            let (rows, state) = tokio::try_join!(read, client.query_opt(&state, &job))?;
            let ended = state.is_some_and(|row| JobState::is_finished_name(row.get(0)));
            (rows, ended)
        } else {
            (read.await?, false)
        };
        let mut logs: Vec<PhaseLog> = Phase::NAMES
            .iter()
            .filter(|phase| {
                query
                    .phase
                    .as_deref()
                    .is_none_or(|wanted| wanted == **phase)
            })
            .map(|phase| PhaseLog {
                phase,
                last_fragment_number: -1,
                log_data: String::new(),
            })
            .collect();
        for row in &rows {
            let phase: &str = row.get(0);
            if let Some(log) = logs.iter_mut().find(|log| log.phase == phase) {
                log.last_fragment_number = row.get(1);
                log.log_data.push_str(row.get(2));
            }
        }
        Ok((logs, ended))
    }

    async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
        let client = self.connection().await?;
        // Ordered as SQLite's (a map by phase and log type, bytewise).
        let select = client
            .prepare_cached(
                "SELECT phase, log_type, string_agg(log_data, '' ORDER BY fragment_number)
                 FROM log_fragments WHERE job_id = $1
                 GROUP BY phase, log_type
                 ORDER BY phase COLLATE \"C\", log_type COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&select, &[&job_id]).await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }

    async fn phase_spans(&self, job_id: &str) -> Result<Vec<PhaseSpan>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT phase, min(timestamp), max(timestamp) FROM log_fragments
                 WHERE job_id = $1 AND log_type = 'output'
                 GROUP BY phase ORDER BY min(timestamp)",
            )
            .await?;
        let rows = client.query(&select, &[&job_id]).await?;
        Ok(rows
            .iter()
            .map(|row| PhaseSpan {
                phase: row.get(0),
                first: row.get(1),
                last: row.get(2),
            })
            .collect())
    }

    async fn logs_so_far(&self, job_id: &str, budget: usize) -> Result<LogsSoFar> {
        let mut client = self.connection().await?;
        // One snapshot: the text stops exactly where `next_fragment` says.
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut logs = LogsSoFar::default();
        let ends = transaction
            .prepare_cached(
                "SELECT log_type, max(fragment_number) FROM log_fragments
                 WHERE job_id = $1 GROUP BY log_type",
            )
            .await?;
        for row in transaction.query(&ends, &[&job_id]).await? {
            logs.next_fragment
                .insert(row.get(0), row.get::<_, i64>(1) + 1);
        }
        let newest_first = transaction
            .prepare_cached(
                "SELECT phase, log_data FROM log_fragments
                 WHERE job_id = $1 AND log_type = $2 AND fragment_number < $3
                 ORDER BY fragment_number DESC",
            )
            .await?;
        for (log_type, next) in &logs.next_fragment {
            // Newest first, a batch at a time, until the budget is spent.
            let portal = transaction
                .bind(&newest_first, &[&job_id, log_type, next])
                .await?;
            let mut kept: Vec<(String, String)> = Vec::new();
            let mut spent = 0;
            'fetching: loop {
                let batch = transaction
                    .query_portal(&portal, FRAGMENTS_PER_FETCH)
                    .await?;
                for row in &batch {
                    let text: String = row.get(1);
                    spent += text.len();
                    if spent > budget {
                        logs.cut.push(log_type.clone());
                        break 'fetching;
                    }
                    kept.push((row.get(0), text));
                }
                if batch.len() < FRAGMENTS_PER_FETCH as usize {
                    break;
                }
            }
            // Oldest first again, consecutive fragments of a phase joined.
            for (phase, text) in kept.into_iter().rev() {
                match logs.texts.last_mut() {
                    Some((kind, last_phase, joined))
                        if kind == log_type && *last_phase == phase =>
                    {
                        joined.push_str(&text)
                    }
                    _ => logs.texts.push((log_type.clone(), phase, text)),
                }
            }
        }
        transaction.commit().await?;
        Ok(logs)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::store::backend::{Jobs, Logs};
    use crate::store::jobs::{NewJob, ResultUpdate};
    use crate::store::postgres::testing;

    fn fragment(n: i64, phase: Phase, text: &str) -> Fragment {
        Fragment {
            fragment_number: n,
            phase,
            timestamp: 100 + n,
            log_data: text.into(),
        }
    }

    #[tokio::test]
    async fn a_resent_fragment_replaces_the_stored_one_and_reads_end_with_the_job() {
        let (_cluster, db) = testing::backend().await;
        db.insert_job(NewJob::plain("j", "q", 0)).await.unwrap();
        let first = vec![
            fragment(0, Phase::Setup, "a"),
            fragment(1, Phase::Test, "b"),
            fragment(1, Phase::Test, "B"),
        ];
        db.insert_fragments("j", "output", first).await.unwrap();
        db.insert_fragments("j", "output", vec![fragment(2, Phase::Test, "c")])
            .await
            .unwrap();
        db.insert_fragments("j", "output", vec![fragment(0, Phase::Setup, "A")])
            .await
            .unwrap();
        db.insert_fragments("j", "serial", vec![fragment(0, Phase::Test, "s")])
            .await
            .unwrap();
        let (logs, ended) = db
            .read_log("j", "output", FragmentQuery::default(), true)
            .await
            .unwrap();
        let shown: Vec<(&str, i64, &str)> = logs
            .iter()
            .filter(|log| log.last_fragment_number >= 0)
            .map(|log| (log.phase, log.last_fragment_number, log.log_data.as_str()))
            .collect();
        assert_eq!(shown, [("setup", 0, "A"), ("test", 2, "Bc")]);
        assert!(!ended);
        let from_two = FragmentQuery {
            start_fragment: 2,
            phase: Some("test".into()),
            ..FragmentQuery::default()
        };
        let (logs, _) = db.read_log("j", "output", from_two, false).await.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].log_data, "c");
        assert_eq!(
            db.full_logs("j").await.unwrap(),
            [
                ("setup".into(), "output".into(), "A".into()),
                ("test".into(), "output".into(), "Bc".into()),
                ("test".into(), "serial".into(), "s".into()),
            ]
        );
        let so_far = db.logs_so_far("j", 2).await.unwrap();
        assert_eq!(
            so_far.texts,
            [
                ("output".into(), "test".into(), "Bc".into()),
                ("serial".into(), "test".into(), "s".into()),
            ]
        );
        assert_eq!(so_far.cut, ["output"]);
        assert_eq!(so_far.next_fragment["output"], 3);
        let done = ResultUpdate {
            job_state: Some("complete".into()),
            ..ResultUpdate::default()
        };
        db.update_result("j", done).await.unwrap();
        let (_, ended) = db
            .read_log("j", "output", FragmentQuery::default(), true)
            .await
            .unwrap();
        assert!(ended);
    }

    #[tokio::test]
    async fn the_budget_of_a_long_log_keeps_its_newest_whole_fragments() {
        let (_cluster, db) = testing::backend().await;
        let many: Vec<Fragment> = (0..200)
            .map(|n| fragment(n, Phase::Test, &format!("{n:03}")))
            .collect();
        db.insert_fragments("j", "output", many).await.unwrap();
        let so_far = db.logs_so_far("j", 3 * 150).await.unwrap();
        let expected: String = (50..200).map(|n| format!("{n:03}")).collect();
        assert_eq!(so_far.texts, [("output".into(), "test".into(), expected)]);
        assert_eq!(so_far.cut, ["output"]);
        let all = db.logs_so_far("j", usize::MAX).await.unwrap();
        assert!(all.cut.is_empty());
    }
}
