//! Integration tests of `tf agent`: the real agent against the real `tf serve`, with
//! configs in the reference format and phase commands that are small shell scripts.

mod control;
mod files;
mod outages;
mod phases;
mod stops;
mod tokens;
