//! The `Store`'s domain operations, by resource: what the rest of tf calls. Each does
//! what is the server's own (waking long-polls, archive files, sealing secrets) and hands
//! the database's part to the backend in use (`store/backend.rs`).

mod agents;
mod clients;
mod jobs;
mod legacy;
mod logs;
mod pages;
mod retention;
mod secrets;
