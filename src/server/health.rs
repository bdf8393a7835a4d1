//! `GET /healthz`: whether this server can serve, for load balancers in front of several
//! replicas: 200 while its database answers, 503 (saying why) while it does not, so the
//! balancer sends requests to the others meanwhile. `GET /v1/` stays the reference's
//! version text, which agents read, and answers whatever the database does.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::app::App;
use super::reply;

/// How long the database may take to answer before this server counts as unhealthy: a
/// balancer's check must not hang on a database that stopped answering.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn check(State(app): State<Arc<App>>) -> Response {
    let answered = tokio::time::timeout(DATABASE_PATIENCE, app.store.database_answers()).await;
    match answered {
        Ok(Ok(())) => reply::text(StatusCode::OK, "ok\n"),
        Ok(Err(error)) => reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {error}\n"),
        ),
        Err(_) => reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the database did not answer within {}s\n",
                DATABASE_PATIENCE.as_secs()
            ),
        ),
    }
}
