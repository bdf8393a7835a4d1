//! Integration tests of the client commands: the real `tf` against the real `tf serve`,
//! output compared with the reference CLI's formats (spec/cli.md).

#[allow(dead_code)]
#[path = "../server/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../agent/runner.rs"]
mod runner;

mod client;
mod commands;
mod demo;
mod interrupts;
mod lab;
mod legacy;
mod reservations;
mod submit;
mod walkthrough;
