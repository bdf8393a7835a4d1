//! The reserve phase's announcement. Connectors, the reference's and tf's, print it once
//! the device is reserved for the job's keys; tools grep for it (the GitHub submit action
//! for the first two lines), and `tf poll` and `tf reserve` read it to know that the
//! reservation really began.

use serde_json::Value;

use super::truthy::is_truthy;

/// The announcement's first line.
pub const RESERVED_BANNER: &str = "*** TESTFLINGER SYSTEM RESERVED ***";
/// What comes before `user@host` on its second line.
pub const CONNECT_TO: &str = "You can now connect to ";

/// The `user@host` that an announcement in `output` (the reserve phase's) names.
pub fn announced_target(output: &str) -> Option<&str> {
    let (_, after) = output.split_once(RESERVED_BANNER)?;
    after
        .lines()
        .find_map(|line| line.strip_prefix(CONNECT_TO))
        .map(str::trim)
        .filter(|target| !target.is_empty())
}

/// Whether the agent will run the job's reserve phase (given a reserve command): its
/// `reserve_data` is truthy and does not ask to skip it.
pub fn asks_for_reservation(job: &Value) -> bool {
    job.get("reserve_data")
        .is_some_and(|data| is_truthy(data) && !data.get("skip").is_some_and(is_truthy))
}
