//! Ctrl-C while following a job: the reference's question (cancel it, or not, or go on),
//! then a plain message saying what became of the job, and exit 130.

use tf_test_support::agent::wait_for_state;
use tf_test_support::server::Server;

use crate::client::{printed_job_id, register_agent, Client, Running};

/// A server whose queue `q` has an agent that takes no jobs: submitted jobs wait.
fn idle_queue() -> (Server, Client) {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    (server, client)
}

/// `tf poll` of a job waiting in the queue, once it has said so.
fn poll_a_waiting_job() -> (Server, Client, String, Running) {
    let (server, client) = idle_queue();
    let job_id = client.submit("job_queue: q\n");
    let mut poll = client.start(None, &["poll", &job_id]);
    poll.wait_for_output("This job will be picked up");
    (server, client, job_id, poll)
}

fn interrupt(following: &mut Running) {
    following.signal("INT");
    following.wait_for_output("(y)es/(N)o/(c)ontinue? ");
}

#[test]
fn ctrl_c_then_no_leaves_the_job_and_says_so() {
    let (server, _client, job_id, mut poll) = poll_a_waiting_job();
    interrupt(&mut poll);
    poll.type_in("n\n");
    let poll = poll.finish();
    assert_eq!(poll.code, 130, "{poll:?}");
    assert_eq!(
        poll.stderr,
        format!("Stopped following job {job_id}; it was not cancelled. To follow it again: tf poll --start_fragment 0 {job_id}\n")
    );
    wait_for_state(&server, &job_id, &["waiting"]);
}

#[test]
fn ctrl_c_then_yes_cancels_the_job_and_says_so() {
    let (server, client) = idle_queue();
    let job = client.write("job.yaml", "job_queue: q\n");
    let mut submit = client.start(None, &["submit", "--poll", job.to_str().expect("utf-8")]);
    submit.wait_for_output("This job will be picked up");
    interrupt(&mut submit);
    submit.type_in("y\n");
    let submit = submit.finish();
    assert_eq!(submit.code, 130, "{submit:?}");
    let job_id = printed_job_id(&submit.stdout);
    assert_eq!(
        submit.stderr,
        format!("Stopped following job {job_id}; it was cancelled.\n"),
        "{submit:?}"
    );
    wait_for_state(&server, &job_id, &["cancelled"]);
}

#[test]
fn a_second_ctrl_c_at_the_question_ends_without_cancelling() {
    let (server, _client, job_id, mut poll) = poll_a_waiting_job();
    interrupt(&mut poll);
    poll.signal("INT");
    let poll = poll.finish();
    assert_eq!(poll.code, 130, "{poll:?}");
    assert!(
        poll.stderr.starts_with(&format!(
            "Stopped following job {job_id}; it was not cancelled."
        )),
        "{poll:?}"
    );
    assert!(!poll.stderr.contains("panicked"), "{poll:?}");
    wait_for_state(&server, &job_id, &["waiting"]);
}
