//! The v1 route table, grouped by who may call each route (spec §2.8), so the auth layer
//! can gate each group as a whole. Every path also answers with a trailing slash.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;

use super::auth::{self, Role};
use super::reply::{self, ApiError};
use super::{agents, clients, jobs, legacy, queues, results, secrets, tokens, webhook, App};

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
        auth::require(state, roles, request, next)
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
    let r = at(r, "/v1/result/{job_id}/output", post(legacy::post_output));
    let r = at(
        r,
        "/v1/result/{job_id}/serial_output",
        post(legacy::post_serial_output),
    );
    let r = at(
        r,
        "/v1/agents/provision_logs/{name}",
        post(agents::provision_log),
    );
    at(
        r,
        "/v1/agents/stop_waiting/{name}",
        post(agents::stop_waiting),
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
    let r = at(r, "/v1/result/{job_id}/output", get(legacy::get_output));
    let r = at(
        r,
        "/v1/result/{job_id}/serial_output",
        get(legacy::get_serial_output),
    );
    let r = at(r, "/v1/agents/data", get(agents::list));
    let r = at(r, "/v1/agents/queues", get(agents::queues));
    let r = at(r, "/v1/agents/images/{queue}", get(agents::images));
    let r = at(r, "/v1/queues/wait_times", get(queues::wait_times));
    let r = at(r, "/v1/queues/{queue}/agents", get(agents::queue_agents));
    let r = at(r, "/v1/restricted-queues", get(clients::restricted_queues));
    let r = at(
        r,
        "/v1/restricted-queues/{queue}",
        get(clients::restricted_queue),
    );
    at(r, "/v1/queues/{queue}/jobs", get(queues::jobs))
}

/// Routes for managers and admins: clients and restricted queues.
fn manager_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/client-permissions", get(clients::list));
    let r = at(
        r,
        "/v1/client-permissions/{client_id}",
        get(clients::show).put(clients::put),
    );
    at(
        r,
        "/v1/restricted-queues/{queue}",
        post(clients::restrict).delete(clients::unrestrict),
    )
}

/// Routes for admins only.
fn admin_routes() -> Routes {
    let r = Router::new();
    let r = at(r, "/v1/oauth2/revoke", post(tokens::revoke));
    at(
        r,
        "/v1/client-permissions/{client_id}",
        axum::routing::delete(clients::delete),
    )
}

/// A client's own secrets (the path may contain slashes, so no trailing-slash twin).
fn secret_routes() -> Routes {
    Router::new().route(
        "/v1/secrets/{client_id}/{*path}",
        put(secrets::put).delete(secrets::delete),
    )
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
    let r = at(Router::new(), "/v1", get(version));
    let r = at(r, "/v1/oauth2/token", post(tokens::token));
    at(r, "/v1/oauth2/refresh", post(tokens::refresh))
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
