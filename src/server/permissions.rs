//! What a submitter may ask for (spec §2.6): a priority, a restricted queue, a
//! reservation longer than six hours. Checked with the permissions in the caller's access
//! token, in the reference's order; the role alone grants none of them.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::app::App;
use super::auth::Identity;
use super::reply::ApiError;
use crate::job::validate::ValidJob;

/// Reservations up to this long need no permission.
const FREE_RESERVATION_SECONDS: u64 = 6 * 3600;

/// The larger of a permission map's `*` entry and its entry for `queue` (0 when absent).
fn effective_limit(permissions: &Map<String, Value>, field: &str, queue: &str) -> i64 {
    let limits = permissions.get(field).and_then(Value::as_object);
    let limit = |key: &str| {
        limits
            .and_then(|l| l.get(key))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    limit("*").max(limit(queue))
}

pub async fn check_submission(
    app: &App,
    identity: &Identity,
    job: &ValidJob,
) -> Result<(), ApiError> {
    let permissions = &identity.permissions;
    let anonymous = permissions.is_empty();
    let queue = &job.queue;
    let unauthorized = |message: String| Err(ApiError::json(StatusCode::UNAUTHORIZED, message));
    let forbidden = |message: String| Err(ApiError::json(StatusCode::FORBIDDEN, message));

    let priority = job.priority;
    if priority != 0 {
        if anonymous {
            return unauthorized(format!(
                "Authentication required for setting priority: {priority}"
            ));
        }
        if priority > effective_limit(permissions, "max_priority", queue) {
            return forbidden(format!(
                "Not enough permissions to push to {queue} with priority {priority}"
            ));
        }
    }

    if app.store.is_restricted(queue).await? {
        if anonymous {
            return unauthorized(format!(
                "Authentication required to push to restricted queue: {queue}"
            ));
        }
        let allowed = permissions
            .get("allowed_queues")
            .and_then(Value::as_array)
            .is_some_and(|queues| queues.iter().any(|q| q.as_str() == Some(queue)));
        if !allowed {
            return forbidden(format!(
                "Not enough permissions to push to the restricted queue: {queue}"
            ));
        }
    }

    let timeout = job.reserve_timeout;
    if timeout > FREE_RESERVATION_SECONDS {
        if anonymous {
            return unauthorized(format!(
                "Authentication required for setting timeout: {timeout}"
            ));
        }
        let limit = effective_limit(permissions, "max_reservation_time", queue);
        if i64::try_from(timeout).unwrap_or(i64::MAX) > limit {
            return forbidden(format!(
                "Not enough permissions to push to {queue} with reservation timeout {timeout}"
            ));
        }
    }
    Ok(())
}
