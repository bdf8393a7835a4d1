//! A request described as a value: method, path, body, and how its answer is read. The
//! protocol's calls are built in `v1`; `Api` (and the CLI's `Session`) send them.

use std::marker::PhantomData;

use hyper::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Reply, RequestBody};

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

/// A JSON answer read as `T` (an empty body, the server's 204, reads as `null`).
pub struct Json<T>(PhantomData<T>);

impl<T: DeserializeOwned> Answer for Json<T> {
    type Output = T;
    fn read(reply: Reply) -> Result<T, serde_json::Error> {
        reply.json()
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
    /// A request to `path` of the server. The v1 protocol's calls are in `v1`; this is
    /// for the other HTTP servers the connectors talk to.
    pub fn new(method: Method, path: String, body: RequestBody) -> Call<A> {
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
