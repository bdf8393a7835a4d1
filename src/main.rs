//! The `tf` binary: the role dispatch is src/lib.rs; only the allocator lives here.

use std::process::ExitCode;

/// musl's allocator serialises threads; the static build would lose throughput with it.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tf::main()
}
