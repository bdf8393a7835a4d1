//! Cross-site request forgery: a page on another site can make a lab member's browser
//! send requests here, with whatever the browser holds. Browsers say where a request
//! comes from, so writes they make for another site are refused; command-line clients and
//! agents send neither header and are not affected.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};

use super::reply::ApiError;

/// The refusal of a write (any method but GET, HEAD, OPTIONS, TRACE) that a browser
/// makes on behalf of another site; `None` for every other request.
pub fn forged_write_refusal(request: &Request) -> Option<ApiError> {
    (!request.method().is_safe() && is_cross_site(request.headers())).then(|| {
        ApiError::json(
            StatusCode::FORBIDDEN,
            "Cross-site request refused: this server takes writes only from its own pages and from clients",
        )
    })
}

/// Whether a browser sent the request for another origin: it says so in
/// `Sec-Fetch-Site`, or, for older browsers, with an `Origin` that is not this host.
fn is_cross_site(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            origin.split_once("://").map(|(_, authority)| authority) != Some(host)
        }
        (Some(_), None) => true,
        _ => false,
    }
}
