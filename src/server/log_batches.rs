//! `POST /v1/result/<id>/log/<type>/batch` (tf's `log-batches`): several fragments of
//! one log in one request, as an agent sends what it has queued. The body is a JSON array
//! of fragments, each exactly as `POST /v1/result/<id>/log/<type>` takes one, checked as
//! strictly and stored as that post stores it (a resent number replaces), all in one
//! write. One bad element refuses the whole batch, its index naming it in the 422 tree.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

use super::app::App;
use super::extract::JsonBytes;
use super::jobs::check_job_id;
use super::reply::{self, ApiError, ApiResult};
use super::results::{parse_log_type, typed_fragment, validated_fragment};
use crate::api::v1::{LogFragment, MAX_BATCH_FRAGMENTS};
use crate::store::Fragment;

pub async fn post_log_batch(
    State(app): State<Arc<App>>,
    Path((job_id, log_type)): Path<(String, String)>,
    body: JsonBytes,
) -> ApiResult {
    let kind = parse_log_type(&log_type)?;
    let fragments = read_batch(&body).await?;
    check_job_id(&job_id)?;
    let count = fragments.len() as u64;
    app.store
        .append_log_fragments(&job_id, &log_type, fragments)
        .await?;
    app.metrics.fragments_stored(kind, count);
    Ok(reply::ok_text())
}

/// The batch as agents send it, parsed straight into fragments; anything else goes
/// through the schema, element by element, for its error tree.
async fn read_batch(body: &JsonBytes) -> Result<Vec<Fragment>, ApiError> {
    if let Some(fragments) = body.read_with(typed_batch).await.flatten() {
        return Ok(fragments);
    }
    let Value::Array(elements) = body.parse().await? else {
        return Err(ApiError::invalid_body(
            json!({"_schema": ["Not a valid list."]}),
        ));
    };
    if elements.len() > MAX_BATCH_FRAGMENTS {
        return Err(ApiError::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "A batch holds at most {MAX_BATCH_FRAGMENTS} fragments, this one has {}",
                elements.len()
            ),
        ));
    }
    if elements.is_empty() {
        return Err(ApiError::invalid_body(
            json!({"_schema": ["Shorter than minimum length 1."]}),
        ));
    }
    let mut fragments = Vec::with_capacity(elements.len());
    let mut errors = Map::new();
    for (index, element) in elements.iter().enumerate() {
        match validated_fragment(element) {
            Ok(fragment) => fragments.push(fragment),
            Err(tree) => {
                errors.insert(index.to_string(), tree);
            }
        }
    }
    if errors.is_empty() {
        Ok(fragments)
    } else {
        Err(ApiError::invalid_body(Value::Object(errors)))
    }
}

/// The fast path: `None` unless every element is a fragment as tf agents send it.
fn typed_batch(bytes: &[u8]) -> Option<Vec<Fragment>> {
    let Batch(posts) = serde_json::from_slice(bytes).ok()?;
    if posts.is_empty() {
        return None;
    }
    posts.into_iter().map(typed_fragment).collect()
}

/// A JSON array of at most `MAX_BATCH_FRAGMENTS` fragments: parsing stops at the first
/// one past that, before the rest is built.
struct Batch(Vec<LogFragment>);

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        deserializer.deserialize_seq(BatchVisitor).map(Batch)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Vec<LogFragment>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "at most {MAX_BATCH_FRAGMENTS} log fragments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Self::Value, A::Error> {
        let mut fragments = Vec::new();
        while let Some(fragment) = elements.next_element()? {
            if fragments.len() == MAX_BATCH_FRAGMENTS {
                return Err(de::Error::invalid_length(MAX_BATCH_FRAGMENTS + 1, &self));
            }
            fragments.push(fragment);
        }
        Ok(fragments)
    }
}
