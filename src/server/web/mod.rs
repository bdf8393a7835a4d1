//! The web pages of `tf serve`: the lab at a glance (`/`), jobs, agents and queues, each
//! with a detail page. Pages are server-rendered from templates compiled into the binary
//! (`templates/`), work without JavaScript, and show what an anonymous contributor may
//! see through the API. The small script in `assets/tf.js` refreshes numbers in place and
//! follows a running job's logs through the API's log long-poll.

mod agents;
mod format;
mod jobs;
mod queues;
mod rows;

use std::sync::Arc;

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::App;

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

/// A page that could not be made: the store failed, or what was asked for is not there.
pub enum PageError {
    NotFound(String),
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> Self {
        PageError::Store(error)
    }
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFound {
    what: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound(what) => {
                let mut response = render(&NotFound { what });
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
            PageError::Store(error) => {
                tracing::warn!("page failed: {error}");
                let status = match error {
                    crate::store::StoreError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, format!("The page could not be made: {error}\n")).into_response()
            }
        }
    }
}

pub type PageResult = Result<Response, PageError>;

/// A rendered template as an HTML answer.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::warn!("template failed: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered\n",
            )
                .into_response()
        }
    }
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
