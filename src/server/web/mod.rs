//! The web pages of `tf serve`: the lab at a glance (`/`), jobs, agents and queues, each
//! with a detail page. Pages are server-rendered from templates compiled into the binary
//! (`templates/`), work without JavaScript, and show what an anonymous contributor may
//! see through the API. The small script in `assets/tf.js` refreshes numbers in place and
//! follows a running job's logs through the API's log long-poll.

mod agents;
mod format;
mod jobs;
mod page;
mod queues;
mod rows;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::app::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(queues::overview))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job_id}", get(jobs::page))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/agents", get(agents::list))
        .route("/agents/{name}", get(agents::page))
        .route("/queues", get(queues::list))
        .route("/queues/{name}", get(queues::page))
        .route("/static/tf.css", get(stylesheet))
        .route("/static/tf.js", get(script))
}

const CSS: &str = include_str!("../../../assets/tf.css");
const JS: &str = include_str!("../../../assets/tf.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// Assets change only with the binary: an hour of caching spares reloads.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
