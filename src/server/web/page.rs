//! What every page handler gives back: a rendered template, or the page that says why
//! there is none.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

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
                let status = crate::server::reply::store_failure_status(&error);
                (status, format!("The page could not be made: {error}\n")).into_response()
            }
        }
    }
}

pub type PageResult = Result<Response, PageError>;

/// A rendered template as an HTML answer.
pub fn render(page: &impl Template) -> Response {
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
