//! Integration tests: each starts the real `tf serve` and talks HTTP to it.

mod agents;
mod auth;
mod bad_input;
mod connections;
mod durability;
mod full_disk;
mod harness;
mod jobs;
mod legacy;
mod lifecycle;
mod logs;
mod lost_database;
mod operations;
mod pages;
mod results;
mod retention;
mod tls;
