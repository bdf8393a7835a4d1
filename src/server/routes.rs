//! The v1 route table, grouped by who may call each route (spec §2.8), so the auth layer
//! can gate each group as a whole. Every path also answers with a trailing slash.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use super::reply::{self, ApiError};
use super::{agents, jobs, queues, results, webhook, App};

type Routes = Router<Arc<App>>;

/// Registers `path` and `path/` for the same handlers.
fn at(router: Routes, path: &str, handlers: MethodRouter<Arc<App>>) -> Routes {
    router
        .route(path, handlers.clone())
        .route(&format!("{path}/"), handlers)
}

/// Routes only agents call.
fn agent_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/job", get(jobs::claim));
    let r = at(
        r,
        "/v1/job/{job_id}/attachments",
        get(jobs::download_attachments),
    );
    let r = at(r, "/v1/job/{job_id}/events", post(webhook::relay));
    let r = at(r, "/v1/result/{job_id}", post(results::post_result));
    let r = at(
        r,
        "/v1/result/{job_id}/artifact",
        post(results::upload_artifact),
    );
    let r = at(
        r,
        "/v1/result/{job_id}/log/{log_type}",
        post(results::post_log),
    );
    at(
        r,
        "/v1/agents/provision_logs/{name}",
        post(agents::provision_log),
    )
}

/// Routes for people: contributors, managers and admins.
fn user_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/job", post(jobs::submit));
    let r = at(r, "/v1/job/search", get(jobs::search));
    let r = at(r, "/v1/job/{job_id}", get(jobs::show));
    let r = at(r, "/v1/job/{job_id}/action", post(jobs::action));
    let r = at(
        r,
        "/v1/job/{job_id}/attachments",
        post(jobs::upload_attachments),
    );
    let r = at(r, "/v1/job/{job_id}/position", get(jobs::position));
    let r = at(
        r,
        "/v1/result/{job_id}/artifact",
        get(results::download_artifact),
    );
    let r = at(
        r,
        "/v1/result/{job_id}/log/{log_type}",
        get(results::get_log),
    );
    let r = at(r, "/v1/agents/data", get(agents::list));
    let r = at(r, "/v1/agents/queues", get(agents::queues));
    let r = at(r, "/v1/agents/images/{queue}", get(agents::images));
    let r = at(r, "/v1/queues/wait_times", get(queues::wait_times));
    let r = at(r, "/v1/queues/{queue}/agents", get(agents::queue_agents));
    at(r, "/v1/queues/{queue}/jobs", get(queues::jobs))
}

/// Routes agents and the people who manage them call.
fn agent_and_manager_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/agents/data/{name}", post(agents::report));
    let r = at(r, "/v1/agents/queues", post(agents::advertise_queues));
    at(r, "/v1/agents/images", post(agents::set_images))
}

/// Routes every role may call.
fn any_role_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/result/{job_id}", get(results::get_result));
    at(r, "/v1/agents/data/{name}", get(agents::show))
}

/// Routes that need no identity at all.
fn public_routes() -> Routes {
    at(Router::new(), "/v1", get(version))
}

pub fn api() -> Routes {
    public_routes()
        .merge(agent_routes())
        .merge(user_routes())
        .merge(agent_and_manager_routes())
        .merge(any_role_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `GET /v1/`: the health check agents and load balancers use.
async fn version() -> axum::response::Response {
    reply::text(
        StatusCode::OK,
        format!(
            "Testflinger Server v1.5.0 (tf {})",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

async fn not_found() -> axum::response::Response {
    reply::text(
        StatusCode::NOT_FOUND,
        "Not found: 404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.\n",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::json(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
