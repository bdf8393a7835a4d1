//! The job's outbox: everything the agent tells the server about a job (log fragments,
//! result and state reports, provision logs, the artifact archive, the final outcome) is
//! appended to a file first, then sent in order by a background task that waits out
//! server outages (`delivery`). Because the file survives the agent, a restarted agent resends
//! whatever was not acknowledged.
//!
//! `tf serve` stores fragments by number and results by replacement, so a resend after a
//! lost acknowledgement changes nothing there; a provision-log entry or (on a reference
//! server) a fragment can then be stored twice.
//!
//! The outbox lives in `<execution_basedir>/.tf-agent/<job_id>/`, outside the run
//! directory, so a phase command cleaning its working directory cannot wipe it. A lock on
//! it keeps two agents sharing an `execution_basedir` from sending the same job.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::watch;

use super::delivery::{Entry, Sender, Transport};
use crate::api::v1::{self, LogFragment};
use crate::job::{LogType, Phase};

/// The directory under `execution_basedir` that holds the agent's own per-job files.
pub const AGENT_DIR: &str = ".tf-agent";
const ENTRIES: &str = "outbox.jsonl";
/// How many bytes of `outbox.jsonl` the server has acknowledged, as 20 digits written in
/// place, so an update is a single small write.
const SENT: &str = "outbox.sent";
const LOCK: &str = "lock";

/// The outbox directory of job `job_id`.
pub fn dir_of(execution_basedir: &Path, job_id: &str) -> PathBuf {
    execution_basedir.join(AGENT_DIR).join(job_id)
}

/// What the appending side keeps.
struct Appender {
    file: File,
    appended: u64,
    /// Next fragment number per log type, job-wide and across agent restarts.
    fragment_numbers: HashMap<String, u64>,
    done: bool,
}

/// Why an outbox cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another agent process is sending this job.
    #[error("another agent holds {0}")]
    Busy(PathBuf),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Outbox {
    dir: PathBuf,
    appender: Mutex<Appender>,
    appended: watch::Sender<u64>,
    sent: watch::Receiver<u64>,
    sender: tokio::task::JoinHandle<()>,
    /// Held (flock) for as long as this outbox sends.
    _lock: File,
}

impl Outbox {
    /// A new, empty outbox in `dir` for a job starting now (anything an earlier run of
    /// the same job left there is discarded).
    pub fn create(dir: &Path, server: Arc<impl Transport>) -> Result<Outbox, OpenError> {
        Outbox::open_locked(dir, server, true)
    }

    /// Opens the outbox in `dir` and starts sending what it holds that the server has not
    /// acknowledged yet.
    pub fn open(dir: &Path, server: Arc<impl Transport>) -> Result<Outbox, OpenError> {
        Outbox::open_locked(dir, server, false)
    }

    fn open_locked(
        dir: &Path,
        server: Arc<impl Transport>,
        fresh: bool,
    ) -> Result<Outbox, OpenError> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = File::create(dir.join(LOCK)).context("cannot create the outbox lock")?;
        // SAFETY: flock on a descriptor we own; it only takes or refuses an advisory lock.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(OpenError::Busy(dir.to_path_buf()));
        }
        if fresh {
            for name in [ENTRIES, SENT] {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        let entries_path = dir.join(ENTRIES);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&entries_path)
            .with_context(|| format!("cannot open {}", entries_path.display()))?;
        let (fragment_numbers, done, complete_bytes) = scan(&entries_path)?;
        // A line cut short by a crash or a full disk is dropped, so appends start clean.
        file.set_len(complete_bytes)
            .context("cannot trim the outbox")?;
        let appended = file
            .seek(SeekFrom::End(0))
            .context("cannot seek the outbox")?;
        let sent_marker = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(SENT))
            .context("cannot open the outbox progress")?;
        let sent = read_sent(&sent_marker).min(appended);

        let (appended_tx, appended_rx) = watch::channel(appended);
        let (sent_tx, sent_rx) = watch::channel(sent);
        let reader = File::open(&entries_path).context("cannot read the outbox")?;
        let sender = Sender::new(server, dir, reader, sent, sent_marker, appended_rx, sent_tx);
        Ok(Outbox {
            dir: dir.to_path_buf(),
            appender: Mutex::new(Appender {
                file,
                appended,
                fragment_numbers,
                done,
            }),
            appended: appended_tx,
            sent: sent_rx,
            sender: tokio::spawn(sender.run()),
            _lock: lock,
        })
    }

    /// Whether the job's last entry was already queued (by this or an earlier agent).
    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    /// The outbox directory, where files to upload are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Appender> {
        self.appender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn post(&self, path: String, body: Value) {
        self.append(&Entry::Post {
            path,
            body,
            batch: None,
        });
    }

    pub fn upload(&self, path: String, file: &str) {
        self.append(&Entry::Upload {
            path,
            file: file.to_string(),
        });
    }

    pub fn mark_done(&self) {
        self.append(&Entry::Done);
    }

    /// Queues a log fragment of `log_type` with the next job-wide fragment number.
    pub fn fragment(&self, job_id: &str, log_type: LogType, phase: Phase, text: &str) {
        let mut appender = self.lock();
        let name = log_type.as_str();
        let number = *appender.fragment_numbers.entry(name.into()).or_insert(0);
        let entry = Entry::Post {
            path: v1::log_path(job_id, log_type),
            body: LogFragment::now(number, phase, text).to_json(),
            batch: Some(v1::log_batch_path(job_id, log_type)),
        };
        if self.append_locked(&mut appender, &entry) {
            appender.fragment_numbers.insert(name.into(), number + 1);
        }
    }

    fn append(&self, entry: &Entry) {
        let mut appender = self.lock();
        self.append_locked(&mut appender, entry);
    }

    /// Appends one entry as one line; `false` (and a log line) if the disk refused it.
    fn append_locked(&self, appender: &mut Appender, entry: &Entry) -> bool {
        let mut line = serde_json::to_vec(entry).expect("outbox entries serialize");
        line.push(b'\n');
        if let Err(error) = appender.file.write_all(&line) {
            // Take back any part that made it, so the next entry starts on a line of its own.
            let _ = appender.file.set_len(appender.appended);
            tracing::error!(
                "cannot write to the outbox in {}: {error}; this report is lost",
                self.dir.display()
            );
            return false;
        }
        appender.appended += line.len() as u64;
        if matches!(entry, Entry::Done) {
            appender.done = true;
        }
        self.appended.send_replace(appender.appended);
        true
    }

    /// Waits up to `limit` for everything queued so far to be delivered. Whatever is left
    /// keeps being sent in the background (the agent moves on to its next job); once all
    /// is delivered, `then` runs (it removes the job's directories). Returns whether
    /// everything was delivered within `limit`.
    pub async fn close(mut self, limit: Duration, then: impl FnOnce() + Send + 'static) -> bool {
        let target = self.lock().appended;
        let delivered = tokio::time::timeout(limit, self.sent.wait_for(|sent| *sent >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        if delivered {
            self.sender.abort();
            then();
            return true;
        }
        tokio::spawn(async move {
            if self.sent.wait_for(|sent| *sent >= target).await.is_ok() {
                self.sender.abort();
                then();
            }
        });
        false
    }
}

/// Reads the entries written so far: the fragment counters, whether `Done` is in, and
/// how many bytes of whole lines there are.
fn scan(path: &Path) -> anyhow::Result<(HashMap<String, u64>, bool, u64)> {
    let mut numbers = HashMap::new();
    let mut done = false;
    let mut complete = 0;
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || !line.ends_with(b"\n") {
            break;
        }
        complete += read as u64;
        match serde_json::from_slice::<Entry>(&line) {
            Ok(Entry::Done) => done = true,
            Ok(Entry::Post { path, body, .. }) => {
                let log_type = path.rsplit_once("/log/").map(|(_, t)| t.to_string());
                let number = body.get("fragment_number").and_then(Value::as_u64);
                if let (Some(log_type), Some(number)) = (log_type, number) {
                    let next = numbers.entry(log_type).or_insert(0);
                    *next = (*next).max(number + 1);
                }
            }
            Ok(Entry::Upload { .. }) | Err(_) => {}
        }
    }
    Ok((numbers, done, complete))
}

fn read_sent(marker: &File) -> u64 {
    let mut digits = [0u8; 20];
    match marker.read_at(&mut digits, 0) {
        Ok(20) => std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The outbox stepped in-process against a stand-in server that fails on cue: the server
/// away, a lost acknowledgement, a refusal, a server without batches, and an agent that
/// dies between two reports. (The test runtime runs the sender only while a test awaits,
/// so what is queued before an await is what the sender finds queued.)
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::stand_in::{Fault, Form, StandIn};

    const JOB: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn log(outbox: &Outbox, text: &str) {
        outbox.fragment(JOB, LogType::Output, Phase::Test, text);
    }

    fn output() -> String {
        v1::log_path(JOB, LogType::Output)
    }

    fn output_batch() -> String {
        v1::log_batch_path(JOB, LogType::Output)
    }

    async fn delivered(outbox: Outbox) -> bool {
        outbox.close(Duration::from_secs(30), || {}).await
    }

    /// Lets the sender run until the stand-in was sent `count` batches.
    async fn batches_sent(server: &StandIn, count: usize) {
        while server.batches_sent() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn reports_wait_out_a_server_that_is_away_and_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[Fault::Away, Fault::Away]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        for text in ["one", "two", "three"] {
            log(&outbox, text);
        }
        assert!(delivered(outbox).await);
        let texts: Vec<Value> = server
            .stored()
            .into_iter()
            .map(|(_, b)| b["log_data"].clone())
            .collect();
        assert_eq!(texts, [json!("one"), json!("two"), json!("three")]);
        // Queued together, they went in one batch, resent whole after each outage.
        assert_eq!(
            server.paths(),
            [output_batch(), output_batch(), output_batch()]
        );
        assert_eq!(server.batches_sent(), 3);
    }

    #[tokio::test]
    async fn a_fragment_queued_alone_is_posted_alone() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        log(&outbox, "one");
        server.stored_count(1).await;
        log(&outbox, "two");
        assert!(delivered(outbox).await);
        assert_eq!(server.paths(), [output(), output()]);
        assert_eq!(server.batches_sent(), 0);
    }

    #[tokio::test]
    async fn a_lost_answer_resends_the_same_fragment_number() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[Fault::LostAnswer]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        log(&outbox, "one");
        server.stored_count(2).await;
        log(&outbox, "two");
        assert!(delivered(outbox).await);
        // The server saw fragment 0 twice: it stores it once by its number.
        assert_eq!(server.fragment_numbers(), [0, 0, 1]);
    }

    #[tokio::test]
    async fn a_lost_answer_to_a_batch_resends_the_batch_with_the_same_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[Fault::LostAnswer]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        for text in ["one", "two", "three"] {
            log(&outbox, text);
        }
        assert!(delivered(outbox).await);
        // `tf serve` stores each number once: the resend replaces what the lost one stored.
        assert_eq!(server.fragment_numbers(), [0, 1, 2, 0, 1, 2]);
        assert_eq!(server.batches_sent(), 2);
    }

    #[tokio::test]
    async fn a_refused_report_does_not_hold_up_the_ones_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[Fault::Refuse]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        outbox.post(v1::result_path(JOB), json!({"job_state": "bogus"}));
        log(&outbox, "after");
        assert!(delivered(outbox).await);
        assert_eq!(server.fragment_numbers(), [0]);
    }

    #[tokio::test]
    async fn only_fragments_of_one_log_queued_one_behind_the_other_share_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        log(&outbox, "a");
        log(&outbox, "b");
        outbox.fragment(JOB, LogType::Serial, Phase::Test, "serial");
        log(&outbox, "c");
        outbox.post(v1::result_path(JOB), json!({"job_state": "test"}));
        log(&outbox, "d");
        log(&outbox, "e");
        assert!(delivered(outbox).await);
        let serial = v1::log_path(JOB, LogType::Serial);
        let result = v1::result_path(JOB);
        let expected = [
            output_batch(),
            output_batch(),
            serial,
            output(),
            result,
            output_batch(),
            output_batch(),
        ];
        assert_eq!(server.paths(), expected);
        assert_eq!(server.fragment_numbers(), [0, 1, 0, 2, 3, 4]);
        assert_eq!(server.batches_sent(), 2);
    }

    #[tokio::test]
    async fn a_server_without_batches_is_sent_fragments_one_by_one_and_asked_once() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::answering(Form::WithoutBatches, &[]);
        let outbox = Outbox::create(&dir.path().join("first"), server.clone()).unwrap();
        for text in ["one", "two", "three"] {
            log(&outbox, text);
        }
        server.stored_count(3).await;
        log(&outbox, "four");
        log(&outbox, "five");
        assert!(delivered(outbox).await);
        // The next job's outbox sends to the same server: it is not asked again.
        let outbox = Outbox::create(&dir.path().join("second"), server.clone()).unwrap();
        log(&outbox, "six");
        log(&outbox, "seven");
        assert!(delivered(outbox).await);
        assert_eq!(server.batches_sent(), 1);
        assert_eq!(server.fragment_numbers(), [0, 1, 2, 3, 4, 0, 1]);
        assert!(server.paths().iter().all(|path| *path == output()));
    }

    #[tokio::test]
    async fn a_refused_batch_is_sent_one_by_one_and_batches_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let server = StandIn::failing(&[Fault::Refuse]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        log(&outbox, "one");
        log(&outbox, "two");
        server.stored_count(2).await;
        log(&outbox, "three");
        log(&outbox, "four");
        assert!(delivered(outbox).await);
        let expected = [output(), output(), output_batch(), output_batch()];
        assert_eq!(server.paths(), expected);
        assert_eq!(server.fragment_numbers(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_forbidden_batch_is_sent_one_by_one_where_single_reports_wait() {
        let dir = tempfile::tempdir().unwrap();
        // The batch path is forbidden (a proxy), then the first single post (credentials
        // being fixed): the batch goes one by one at once, the single post waits.
        let server = StandIn::failing(&[Fault::Forbid, Fault::Forbid]);
        let outbox = Outbox::create(dir.path(), server.clone()).unwrap();
        log(&outbox, "one");
        log(&outbox, "two");
        assert!(delivered(outbox).await);
        assert_eq!(server.paths(), [output(), output()]);
        assert_eq!(server.fragment_numbers(), [0, 1]);
        assert_eq!(server.batches_sent(), 1);
    }

    #[tokio::test]
    async fn an_agent_that_dies_between_two_reports_resends_only_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let first_life = StandIn::failing(&[Fault::Store, Fault::Hang]);
        let outbox = Outbox::create(dir.path(), first_life.clone()).unwrap();
        log(&outbox, "one");
        first_life.stored_count(1).await;
        log(&outbox, "two");
        log(&outbox, "three");
        // The agent dies while the server holds its second report.
        batches_sent(&first_life, 1).await;
        outbox.sender.abort();
        drop(outbox);

        let second_life = StandIn::failing(&[]);
        let outbox = Outbox::open(dir.path(), second_life.clone()).unwrap();
        assert!(!outbox.is_done());
        log(&outbox, "four");
        outbox.mark_done();
        assert!(delivered(outbox).await);
        assert_eq!(first_life.fragment_numbers(), [0]);
        // Fragment 0 is not sent again; numbering goes on where the first life left it.
        assert_eq!(second_life.fragment_numbers(), [1, 2, 3]);
        assert!(Outbox::open(dir.path(), second_life).unwrap().is_done());
    }

    #[tokio::test]
    async fn an_agent_that_dies_between_two_batches_resends_only_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let first_life = StandIn::failing(&[]);
        let outbox = Outbox::create(dir.path(), first_life.clone()).unwrap();
        for text in ["one", "two", "three"] {
            log(&outbox, text);
        }
        first_life.stored_count(3).await;
        for text in ["four", "five"] {
            log(&outbox, text);
        }
        // The agent dies before its second batch leaves.
        outbox.sender.abort();
        drop(outbox);

        let second_life = StandIn::failing(&[]);
        let outbox = Outbox::open(dir.path(), second_life.clone()).unwrap();
        log(&outbox, "six");
        outbox.mark_done();
        assert!(delivered(outbox).await);
        assert_eq!(first_life.fragment_numbers(), [0, 1, 2]);
        assert_eq!(second_life.fragment_numbers(), [3, 4, 5]);
        assert_eq!(second_life.batches_sent(), 1);
    }
}
