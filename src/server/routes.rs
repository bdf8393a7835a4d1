//! The v1 route table, grouped by who may call each route (spec §2.8), so the auth layer
//! can gate each group as a whole. Every path also answers with a trailing slash.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;

use super::app::App;
use super::auth::Role;
use super::gate;
use super::reply::{self, ApiError};
use super::{
    agents, clients, jobs, legacy, log_batches, queues, results, secrets, tokens, webhook,
};
use crate::api::v1::routes as path;

type Routes = Router<Arc<App>>;

/// Registers `path` and `path/` for the same handlers.
fn at(router: Routes, path: &str, handlers: MethodRouter<Arc<App>>) -> Routes {
    router
        .route(path, handlers.clone())
        .route(&format!("{path}/"), handlers)
}

/// Lets only callers with one of `roles` through to `routes`.
fn gate(routes: Routes, app: &Arc<App>, roles: &'static [Role]) -> Routes {
    let gate = move |state: State<Arc<App>>, request: Request, next: Next| {
        gate::require(state, roles, request, next)
    };
    routes.route_layer(middleware::from_fn_with_state(app.clone(), gate))
}

const AGENT: &[Role] = &[Role::Agent];
const USERS: &[Role] = &[Role::Admin, Role::Manager, Role::Contributor];
const AGENTS_AND_MANAGERS: &[Role] = &[Role::Admin, Role::Manager, Role::Agent];
const MANAGERS: &[Role] = &[Role::Admin, Role::Manager];
const ADMIN: &[Role] = &[Role::Admin];
const SECRET_OWNERS: &[Role] = &[Role::Contributor, Role::Manager, Role::Admin];

/// Routes only agents call.
fn agent_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::JOBS.template(), get(jobs::claim));
    let r = at(
        r,
        path::JOB_ATTACHMENTS.template(),
        get(jobs::download_attachments),
    );
    let r = at(r, path::JOB_EVENTS.template(), post(webhook::relay));
    let r = at(r, path::RESULT.template(), post(results::post_result));
    let r = at(r, path::ARTIFACT.template(), post(results::upload_artifact));
    let r = at(r, path::LOG.template(), post(results::post_log));
    let r = at(
        r,
        path::LOG_BATCH.template(),
        post(log_batches::post_log_batch),
    );
    let r = at(r, path::LEGACY_OUTPUT.template(), post(legacy::post_output));
    let r = at(
        r,
        path::LEGACY_SERIAL_OUTPUT.template(),
        post(legacy::post_serial_output),
    );
    let r = at(
        r,
        path::PROVISION_LOGS.template(),
        post(agents::provision_log),
    );
    at(r, path::STOP_WAITING.template(), post(agents::stop_waiting))
}

/// Routes for people: contributors, managers and admins.
fn user_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::JOBS.template(), post(jobs::submit));
    let r = at(r, path::JOB_SEARCH.template(), get(jobs::search));
    let r = at(r, path::JOB.template(), get(jobs::show));
    let r = at(r, path::JOB_ACTION.template(), post(jobs::action));
    let r = at(
        r,
        path::JOB_ATTACHMENTS.template(),
        post(jobs::upload_attachments),
    );
    let r = at(r, path::JOB_POSITION.template(), get(jobs::position));
    let r = at(
        r,
        path::ARTIFACT.template(),
        get(results::download_artifact),
    );
    let r = at(r, path::LOG.template(), get(results::get_log));
    let r = at(r, path::LEGACY_OUTPUT.template(), get(legacy::get_output));
    let r = at(
        r,
        path::LEGACY_SERIAL_OUTPUT.template(),
        get(legacy::get_serial_output),
    );
    let r = at(r, path::AGENTS.template(), get(agents::list));
    let r = at(r, path::AGENT_QUEUES.template(), get(agents::queues));
    let r = at(r, path::QUEUE_IMAGES.template(), get(agents::images));
    let r = at(r, path::WAIT_TIMES.template(), get(queues::wait_times));
    let r = at(r, path::QUEUE_AGENTS.template(), get(agents::queue_agents));
    let r = at(
        r,
        path::RESTRICTED_QUEUES.template(),
        get(clients::restricted_queues),
    );
    let r = at(
        r,
        path::RESTRICTED_QUEUE.template(),
        get(clients::restricted_queue),
    );
    at(r, path::QUEUE_JOBS.template(), get(queues::jobs))
}

/// Routes for managers and admins: clients and restricted queues.
fn manager_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::CLIENT_PERMISSIONS.template(), get(clients::list));
    let r = at(
        r,
        path::CLIENT_PERMISSION.template(),
        get(clients::show).put(clients::put),
    );
    at(
        r,
        path::RESTRICTED_QUEUE.template(),
        post(clients::restrict).delete(clients::unrestrict),
    )
}

/// Routes for admins only.
fn admin_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::REVOKE.template(), post(tokens::revoke));
    at(
        r,
        path::CLIENT_PERMISSION.template(),
        axum::routing::delete(clients::delete),
    )
}

/// A client's own secrets (the path may contain slashes, so no trailing-slash twin).
fn secret_routes() -> Routes {
    Router::new().route(
        path::SECRET.template(),
        put(secrets::put).delete(secrets::delete),
    )
}

/// Routes agents and the people who manage them call.
fn agent_and_manager_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::AGENT.template(), post(agents::report));
    let r = at(
        r,
        path::AGENT_QUEUES.template(),
        post(agents::advertise_queues),
    );
    at(r, path::AGENT_IMAGES.template(), post(agents::set_images))
}

/// Routes every role may call.
fn any_role_routes() -> Routes {
    let r = Router::new();
    let r = at(r, path::RESULT.template(), get(results::get_result));
    at(r, path::AGENT.template(), get(agents::show))
}

/// Routes that need no identity at all.
fn public_routes() -> Routes {
    let r = at(Router::new(), path::VERSION.template(), get(version));
    let r = at(r, path::TOKEN.template(), post(tokens::token));
    at(r, path::REFRESH.template(), post(tokens::refresh))
}

pub fn api(app: &Arc<App>) -> Routes {
    public_routes()
        .merge(gate(agent_routes(), app, AGENT))
        .merge(gate(user_routes(), app, USERS))
        .merge(gate(agent_and_manager_routes(), app, AGENTS_AND_MANAGERS))
        .merge(gate(any_role_routes(), app, &Role::ALL))
        .merge(gate(manager_routes(), app, MANAGERS))
        .merge(gate(admin_routes(), app, ADMIN))
        .merge(gate(secret_routes(), app, SECRET_OWNERS))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `GET /v1/`: the health check agents and load balancers use.
/// `GET /v1`. The `tf-extensions` header tells `tf` clients and agents which additions
/// to the reference API this server has (a reference server sends none).
async fn version() -> axum::response::Response {
    let mut response = reply::text(
        StatusCode::OK,
        format!(
            "Testflinger Server v1.5.0 (tf {})",
            env!("CARGO_PKG_VERSION")
        ),
    );
    response.headers_mut().insert(
        crate::api::EXTENSIONS_HEADER,
        axum::http::HeaderValue::from_static(crate::api::EXTENSIONS),
    );
    response
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
