//! The job's outbox: everything the agent tells the server about a job (log fragments,
//! result and state reports, events, the artifact archive, the final outcome) is appended
//! to a file in the run directory first, then sent in order by a background task that
//! waits out server outages. Because the file survives the agent, a restarted agent
//! resends whatever was not acknowledged. The server stores every entry idempotently
//! (fragments by number, results by replacement), so a resend never duplicates output.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::{Api, ApiError, Upload};
use crate::job::time;

/// The agent's own files inside a run directory.
pub const AGENT_DIR: &str = ".tf-agent";
const ENTRIES: &str = "outbox.jsonl";
/// How many bytes of `outbox.jsonl` the server has acknowledged, as 20 digits written in
/// place, so an update is a single small write.
const SENT: &str = "outbox.sent";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A JSON POST.
    Post { path: String, body: Value },
    /// A file (relative to the agent dir) uploaded as the multipart field `file`.
    Upload { path: String, file: String },
    /// Nothing to send: the job's last entry is in.
    Done,
}

/// What the appending side needs to know; shared with nobody but itself.
struct Appender {
    file: File,
    appended: u64,
    /// Next fragment number per log type, job-wide and across agent restarts.
    fragment_numbers: HashMap<String, u64>,
    done: bool,
}

pub struct Outbox {
    agent_dir: PathBuf,
    appender: Mutex<Appender>,
    appended: watch::Sender<u64>,
    sent: watch::Receiver<u64>,
    sender: tokio::task::JoinHandle<()>,
}

impl Outbox {
    /// Opens (or creates) the outbox of the run directory `run_dir` and starts sending
    /// what it holds that the server has not acknowledged yet.
    pub fn open(run_dir: &Path, api: Arc<Api>) -> anyhow::Result<Outbox> {
        let agent_dir = run_dir.join(AGENT_DIR);
        std::fs::create_dir_all(&agent_dir)
            .with_context(|| format!("cannot create {}", agent_dir.display()))?;
        let entries_path = agent_dir.join(ENTRIES);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&entries_path)
            .with_context(|| format!("cannot open {}", entries_path.display()))?;
        let (fragment_numbers, done) = scan(&entries_path)?;
        let appended = file.seek(SeekFrom::End(0))?;
        let sent_marker = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(agent_dir.join(SENT))?;
        let sent = read_sent(&sent_marker).min(appended);

        let (appended_tx, appended_rx) = watch::channel(appended);
        let (sent_tx, sent_rx) = watch::channel(sent);
        let sender = Sender {
            api,
            agent_dir: agent_dir.clone(),
            reader: BufReader::new(File::open(&entries_path)?),
            sent,
            sent_marker,
            appended: appended_rx,
            progress: sent_tx,
        };
        Ok(Outbox {
            agent_dir,
            appender: Mutex::new(Appender {
                file,
                appended,
                fragment_numbers,
                done,
            }),
            appended: appended_tx,
            sent: sent_rx,
            sender: tokio::spawn(sender.run()),
        })
    }

    /// Whether the job's last entry was already queued (by this or an earlier agent).
    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    pub fn agent_dir(&self) -> &Path {
        &self.agent_dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Appender> {
        self.appender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn post(&self, path: String, body: Value) {
        self.append(&Entry::Post { path, body });
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
    pub fn fragment(&self, job_id: &str, log_type: &str, phase: &str, text: &str) {
        let mut appender = self.lock();
        let number = appender
            .fragment_numbers
            .entry(log_type.into())
            .or_insert(0);
        let entry = Entry::Post {
            path: format!("/v1/result/{job_id}/log/{log_type}"),
            body: json!({
                "fragment_number": *number,
                "timestamp": time::render_micros(time::now()),
                "phase": phase,
                "log_data": text,
            }),
        };
        *number += 1;
        self.append_locked(&mut appender, &entry);
    }

    fn append(&self, entry: &Entry) {
        let mut appender = self.lock();
        self.append_locked(&mut appender, entry);
    }

    fn append_locked(&self, appender: &mut Appender, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("outbox entries serialize");
        line.push(b'\n');
        // One write per entry, so a reader never sees half of one unless the disk filled.
        if let Err(error) = appender.file.write_all(&line) {
            tracing::error!(
                "cannot write to the outbox in {}: {error}; this report is lost",
                self.agent_dir.display()
            );
            return;
        }
        appender.appended += line.len() as u64;
        if matches!(entry, Entry::Done) {
            appender.done = true;
        }
        self.appended.send_replace(appender.appended);
    }

    /// Waits until everything queued so far was delivered, or `limit` passed; then stops
    /// the sender. Returns whether everything was delivered.
    pub async fn close(mut self, limit: Duration) -> bool {
        let target = self.lock().appended;
        let delivered = tokio::time::timeout(limit, self.sent.wait_for(|sent| *sent >= target))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        self.sender.abort();
        delivered
    }
}

/// Reads the entries written so far: the fragment counters, and whether `Done` is in.
fn scan(path: &Path) -> anyhow::Result<(HashMap<String, u64>, bool)> {
    let mut numbers = HashMap::new();
    let mut done = false;
    for line in BufReader::new(File::open(path)?).lines() {
        let Ok(entry) = serde_json::from_str::<Entry>(&line?) else {
            continue; // a line cut short by a crash or a full disk
        };
        match entry {
            Entry::Done => done = true,
            Entry::Post { path, body } => {
                let log_type = path.rsplit_once("/log/").map(|(_, t)| t.to_string());
                let number = body.get("fragment_number").and_then(Value::as_u64);
                if let (Some(log_type), Some(number)) = (log_type, number) {
                    let next = numbers.entry(log_type).or_insert(0);
                    *next = (*next).max(number + 1);
                }
            }
            Entry::Upload { .. } => {}
        }
    }
    Ok((numbers, done))
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

/// The background half: sends entries in file order, one at a time.
struct Sender {
    api: Arc<Api>,
    agent_dir: PathBuf,
    reader: BufReader<File>,
    sent: u64,
    sent_marker: File,
    appended: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
}

impl Sender {
    async fn run(mut self) {
        if self.reader.seek(SeekFrom::Start(self.sent)).is_err() {
            return;
        }
        loop {
            if *self.appended.borrow_and_update() <= self.sent {
                if self.appended.changed().await.is_err() {
                    return; // the outbox was dropped
                }
                continue;
            }
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(_) if line.ends_with('\n') => {}
                // The rest of the line is not written yet (or the disk filled): wait.
                _ => {
                    let _ = self.reader.seek(SeekFrom::Start(self.sent));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(entry) => self.deliver(&entry).await,
                Err(error) => tracing::warn!("skipping an unreadable outbox entry: {error}"),
            }
            self.sent += line.len() as u64;
            let digits = format!("{:020}", self.sent);
            if let Err(error) = self.sent_marker.write_all_at(digits.as_bytes(), 0) {
                tracing::warn!("cannot record outbox progress: {error}");
            }
            self.progress.send_replace(self.sent);
        }
    }

    /// Sends one entry until the server takes it or refuses it for good.
    async fn deliver(&self, entry: &Entry) {
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0;
        loop {
            let outcome = match entry {
                Entry::Done => return,
                Entry::Post { path, body } => self
                    .api
                    .post_json(path, body, REQUEST_TIMEOUT)
                    .await
                    .map(drop),
                Entry::Upload { path, file } => {
                    let upload = Upload {
                        file: self.agent_dir.join(file),
                        field: "file".into(),
                        filename: "file".into(),
                        content_type: "application/x-gzip".into(),
                    };
                    self.api
                        .upload(path, upload, UPLOAD_TIMEOUT)
                        .await
                        .map(drop)
                }
            };
            let error = match outcome {
                Ok(()) => return,
                Err(error) => error,
            };
            attempts += 1;
            match Retry::after(&error, attempts) {
                Retry::Later => {
                    tracing::warn!("{error}; will resend in {}ms", backoff.as_millis());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Retry::GiveUp => {
                    tracing::error!("the server refused a report, dropping it: {error}");
                    return;
                }
            }
        }
    }
}

/// What to do with a report the server did not take.
enum Retry {
    Later,
    GiveUp,
}

/// Attempts at a report the server keeps failing on (an answered 500): past these it is
/// dropped rather than holding up every report behind it.
const MAX_FAILED_ATTEMPTS: u32 = 5;

impl Retry {
    fn after(error: &ApiError, attempts: u32) -> Retry {
        let Some(status) = error.status() else {
            // No answer: the server is away. Keep everything until it is back.
            return match error {
                ApiError::Unreachable { .. } => Retry::Later,
                _ => Retry::GiveUp,
            };
        };
        match status.as_u16() {
            // Away behind a proxy, busy, or our credentials need an admin: wait for it.
            401 | 403 | 429 | 502 | 503 | 504 => Retry::Later,
            500..=599 if attempts < MAX_FAILED_ATTEMPTS => Retry::Later,
            _ => Retry::GiveUp,
        }
    }
}
