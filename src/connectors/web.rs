//! HTTP for connectors (image downloads, boot checks, repositories, control-host APIs):
//! the shared API client on a small runtime of its own, since connectors are plain
//! blocking programs.

use std::path::Path;
use std::time::Duration;

use crate::api::{Api, Call, Reply, RequestBody};

/// A runtime for one connector's HTTP requests.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// The client for `url`'s server, and the path (with query) to ask it for.
fn split(url: &str) -> Result<(Api, String), String> {
    let api = Api::new(url).map_err(|e| e.to_string())?;
    let path = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.path_and_query().map(|p| p.to_string()))
        .unwrap_or_else(|| "/".into());
    Ok((api, path))
}

/// `GET url`, whatever the status.
pub fn get(url: &str, limit: Duration) -> Result<Reply, String> {
    let (api, path) = split(url)?;
    runtime()?
        .block_on(api.send(
            Call::raw(hyper::Method::GET, path, RequestBody::Empty),
            limit,
        ))
        .map_err(|e| e.to_string())
}

/// Streams `url` into `file`; an error for anything but a 2xx with content.
pub fn download(url: &str, file: &Path, limit: Duration) -> Result<(), String> {
    let (api, path) = split(url)?;
    match runtime()?.block_on(api.download(&path, file, limit)) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server sent nothing (204)".into()),
        Err(error) => Err(error.to_string()),
    }
}
