//! Queue views: wait-time percentiles and the jobs of a queue.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::app::App;
use super::extract::QueryPairs;
use super::reply::{self, ApiResult};
use crate::job::time;

const PERCENTILES: [u32; 5] = [5, 10, 50, 90, 95];

/// Linear interpolation between the two nearest samples, as the reference computes it.
pub fn percentiles(sorted: &[i64]) -> Value {
    let mut result = Map::new();
    if sorted.is_empty() {
        return Value::Object(result);
    }
    let n = sorted.len();
    for p in PERCENTILES {
        let index = (n - 1) as f64 * f64::from(p) / 100.0;
        let low = index.floor() as usize;
        // Like the reference: interpolated values are floats, an exact sample stays an int.
        let value = if low + 1 < n {
            let high = low + 1;
            json!(
                sorted[low] as f64 * (high as f64 - index)
                    + sorted[high] as f64 * (index - low as f64)
            )
        } else {
            json!(sorted[low])
        };
        result.insert(p.to_string(), value);
    }
    Value::Object(result)
}

/// `GET /v1/queues/wait_times[?queue=…]`
pub async fn wait_times(State(app): State<Arc<App>>, query: QueryPairs) -> ApiResult {
    let queues = query.all("queue").map(str::to_string).collect();
    let samples = app.store.wait_times(queues).await?;
    let table: Map<String, Value> = samples
        .into_iter()
        .map(|(queue, seconds)| (queue, percentiles(&seconds)))
        .collect();
    Ok(reply::json(&Value::Object(table)))
}

/// `GET /v1/queues/<queue>/jobs`: every job of the queue, or 204 when there is none.
pub async fn jobs(State(app): State<Arc<App>>, Path(queue): Path<String>) -> ApiResult {
    let jobs = app.store.queue_jobs(&queue).await?;
    if jobs.is_empty() {
        return Ok(reply::no_content());
    }
    let listing: Vec<Value> = jobs
        .into_iter()
        .map(|job| {
            json!({
                "job_id": job.job_id,
                "created_at": time::render(job.created_at),
                "job_state": job.state,
                "job_queue": job.queue,
            })
        })
        .collect();
    Ok(reply::json(&Value::Array(listing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_the_reference_example() {
        assert_eq!(
            percentiles(&[5, 100, 3700]),
            json!({"5": 14.5, "10": 24.0, "50": 100.0, "90": 2980.0, "95": 3339.9999999999995})
        );
        assert_eq!(percentiles(&[]), json!({}));
        assert_eq!(
            percentiles(&[7]),
            json!({"5": 7, "10": 7, "50": 7, "90": 7, "95": 7})
        );
    }
}
