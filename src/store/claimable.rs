//! Which queues may hold a job that an agent could claim now, kept in memory so that an
//! empty poll (most of an idle lab's requests) is answered without the database.
//!
//! The view is a superset of the truth: a queue may be listed with no claimable job left
//! (a job cancelled, expired, or excluding the agent that asks), which only costs a trip
//! to the database; a queue with a claimable job is never missing from it, so no job
//! waits unseen. Every write that makes a job claimable marks its queue before its
//! caller hears of it (on SQLite inside the writer's transaction, so the mark holds even
//! when the caller has gone). A claim that found nothing unmarks its queues afterwards,
//! unless one was marked again since the poll looked (each mark carries a new number),
//! which keeps a job submitted during the claim visible. On PostgreSQL other servers on
//! the same database make jobs claimable too: their queues are marked when the backend
//! reads the queues again (`store/postgres/claimable.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ClaimableQueues {
    state: Mutex<Marks>,
}

#[derive(Default)]
struct Marks {
    /// Queues that may hold a claimable job, each with the number of its latest mark.
    queues: HashMap<String, u64>,
    last_mark: u64,
}

/// What a poll saw of its queues' marks, to unmark them if its claim finds nothing.
pub struct Seen(Vec<Option<u64>>);

/// The statement that finds the queues holding claimable jobs now, the same on both
/// backends.
pub const QUEUES_WITH_CLAIMABLE_JOBS: &str = "SELECT DISTINCT queue FROM jobs
    WHERE state = 'waiting' AND (attachments IS NULL OR attachments = 'complete')";

impl ClaimableQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job of `queue` became claimable (called inside the write that does it).
    pub fn mark(&self, queue: &str) {
        let mut marks = self.lock();
        marks.last_mark += 1;
        let number = marks.last_mark;
        match marks.queues.get_mut(queue) {
            Some(mark) => *mark = number,
            None => {
                marks.queues.insert(queue.to_string(), number);
            }
        }
    }

    /// `None` when none of `queues` can hold a claimable job: the poll is answered empty.
    pub fn look(&self, queues: &[String]) -> Option<Seen> {
        let marks = self.lock();
        let seen: Vec<Option<u64>> = queues
            .iter()
            .map(|queue| marks.queues.get(queue.as_str()).copied())
            .collect();
        seen.iter().any(Option::is_some).then_some(Seen(seen))
    }

    /// A claim of `queues` after `seen` found nothing for its agent, and no job at all
    /// but in `still_claimable` (jobs that exclude the agent): the others, unless marked
    /// since, are empty.
    pub fn found_none(&self, queues: &[String], seen: Seen, still_claimable: &[String]) {
        let mut marks = self.lock();
        for (queue, seen) in queues.iter().zip(seen.0) {
            let unmarked_since =
                seen.is_some() && marks.queues.get(queue.as_str()).copied() == seen;
            if unmarked_since && !still_claimable.contains(queue) {
                marks.queues.remove(queue.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_poll_of_unmarked_queues_needs_no_claim() {
        let view = ClaimableQueues::default();
        view.mark("a");
        assert!(view.look(&queues(&["b", "c"])).is_none());
        assert!(view.look(&queues(&["b", "a"])).is_some());
    }

    #[test]
    fn a_claim_that_found_nothing_unmarks_its_queues() {
        let view = ClaimableQueues::default();
        view.mark("a");
        view.mark("b");
        let polled = queues(&["a", "c"]);
        let seen = view.look(&polled).expect("a is marked");
        view.found_none(&polled, seen, &[]);
        assert!(view.look(&queues(&["a"])).is_none());
        assert!(view.look(&queues(&["b"])).is_some(), "b was not polled");
    }

    #[test]
    fn a_queue_with_jobs_for_other_agents_stays_marked() {
        let view = ClaimableQueues::default();
        view.mark("a");
        let polled = queues(&["a"]);
        let seen = view.look(&polled).expect("a is marked");
        view.found_none(&polled, seen, &queues(&["a"]));
        assert!(view.look(&polled).is_some());
    }

    #[test]
    fn a_job_marked_during_the_claim_stays_visible() {
        let view = ClaimableQueues::default();
        view.mark("a");
        let polled = queues(&["a"]);
        let seen = view.look(&polled).expect("a is marked");
        // A submit to `a` commits after the claim looked at the table.
        view.mark("a");
        view.found_none(&polled, seen, &[]);
        assert!(view.look(&polled).is_some());
    }
}
