//! Integration tests: each starts the real `tf serve` and talks HTTP to it.

mod agents;
mod auth;
mod bad_input;
mod connections;
mod cross_site;
mod dispatch;
mod durability;
mod failover;
mod full_disk;
mod jobs;
mod legacy;
mod lifecycle;
mod limits;
mod logs;
mod lost_database;
mod names;
mod operations;
mod ownership;
mod pages;
mod postgres;
mod replicas;
mod results;
mod retention;
mod tls;
