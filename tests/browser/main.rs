//! Browser tests: headless Chromium, driven over the DevTools protocol, against the real
//! `tf serve` and `tf agent`. Chromium is Debian's `chromium` package, installed on first
//! use when missing; screenshots go to `target/screenshots/` (test artifacts, not git).

mod chromium;
mod pages;
