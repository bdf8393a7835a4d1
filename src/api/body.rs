//! Request bodies that can be sent more than once (a 401 replays the request), including
//! multipart uploads streamed from a file rather than read into memory.

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio_util::io::ReaderStream;

use super::error::ApiError;

pub type ApiBody = BoxBody<Bytes, std::io::Error>;

/// A file sent as the one part of a `multipart/form-data` body.
#[derive(Clone, Debug)]
pub struct Upload {
    pub file: PathBuf,
    /// The form field name (`file` for artifacts and attachments).
    pub field: String,
    pub filename: String,
    pub content_type: String,
}

const BOUNDARY: &str = "tf-upload-9b1c7e0f3a5d4c28";

impl Upload {
    fn preamble(&self) -> String {
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            self.field, self.filename, self.content_type
        )
    }

    fn epilogue() -> String {
        format!("\r\n--{BOUNDARY}--\r\n")
    }
}

pub enum RequestBody {
    Empty,
    Json(Bytes),
    Upload(Upload),
}

impl RequestBody {
    pub fn json(value: &Value) -> RequestBody {
        RequestBody::Json(Bytes::from(value.to_string()))
    }

    /// The headers that describe this body.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RequestBody::Empty => vec![],
            RequestBody::Json(_) => vec![("content-type", "application/json".into())],
            RequestBody::Upload(_) => vec![(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )],
        }
    }

    /// A fresh body stream; an upload reopens its file each time.
    pub async fn open(&self) -> Result<ApiBody, ApiError> {
        Ok(match self {
            RequestBody::Empty => Empty::new().map_err(|never| match never {}).boxed(),
            RequestBody::Json(bytes) => Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
            RequestBody::Upload(upload) => {
                let file = tokio::fs::File::open(&upload.file)
                    .await
                    .map_err(|source| ApiError::File {
                        path: upload.file.clone(),
                        source,
                    })?;
                let preamble = Bytes::from(upload.preamble());
                let parts = stream::once(async move { Ok(preamble) })
                    .chain(ReaderStream::with_capacity(file, 64 * 1024))
                    .chain(stream::once(async { Ok(Bytes::from(Upload::epilogue())) }));
                BodyExt::boxed(StreamBody::new(parts.map_ok(Frame::data)))
            }
        })
    }
}
