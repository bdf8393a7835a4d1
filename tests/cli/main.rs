//! Integration tests of the client commands: the real `tf` against the real `tf serve`,
//! output compared with the reference CLI's formats (spec/cli.md).

mod client;
mod commands;
mod demo;
mod interrupts;
mod lab;
mod legacy;
mod reservations;
mod snapshots;
mod submit;
mod walkthrough;
