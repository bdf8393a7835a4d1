//! A request described as a value: method, path, body, and how its answer is read. The
//! protocol's calls are built in `v1`; `Api` (and the CLI's `Session`) send them.

use std::marker::PhantomData;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::body::RequestBody;
use super::reply::Reply;

/// How an answer's body is read into what a call gives back.
pub trait Answer {
    type Output;
    fn read(reply: Reply) -> Result<Self::Output, serde_json::Error>;
}

/// The whole answer: status, headers and body as they came.
impl Answer for Reply {
    type Output = Reply;
    fn read(reply: Reply) -> Result<Reply, serde_json::Error> {
        Ok(reply)
    }
}

/// Nothing to read: only the status counts.
impl Answer for () {
    type Output = ();
    fn read(_: Reply) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

/// A JSON answer read as `T`. The server's 204 (no content) reads as `null`; any other
/// body must be JSON, as the reference's clients insist.
pub struct Json<T>(PhantomData<T>);

impl<T: DeserializeOwned> Answer for Json<T> {
    type Output = T;
    fn read(reply: Reply) -> Result<T, serde_json::Error> {
        if reply.status == StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null);
        }
        serde_json::from_slice(&reply.body)
    }
}

/// One request of the protocol, and the type its answer is read as.
pub struct Call<A> {
    pub method: Method,
    pub path: String,
    pub body: RequestBody,
    answer: PhantomData<fn() -> A>,
}

impl<A> Call<A> {
    pub(super) fn new(method: Method, path: String, body: RequestBody) -> Call<A> {
        Call {
            method,
            path,
            body,
            answer: PhantomData,
        }
    }

    pub(super) fn get(path: String) -> Call<A> {
        Call::new(Method::GET, path, RequestBody::Empty)
    }

    pub(super) fn post(path: String, body: &Value) -> Call<A> {
        Call::new(Method::POST, path, RequestBody::json(body))
    }
}

impl Call<Reply> {
    /// A request to `path` of any HTTP server, answered as it comes. The v1 protocol's
    /// calls are in `v1`; this is for the other servers the connectors talk to.
    pub fn raw(method: Method, path: String, body: RequestBody) -> Call<Reply> {
        Call::new(method, path, body)
    }
}
