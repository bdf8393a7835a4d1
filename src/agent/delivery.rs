//! The sending half of a job's outbox: the entries its file holds, read in order and
//! delivered through a `Transport` (the server, or a stand-in in tests), each until the
//! server takes it or refuses it for good, waiting out outages. Fragments of one log
//! queued one behind the other go in one batch where the server takes batches.

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::api::v1;
use crate::api::{ApiError, Upload};

const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// One line of the outbox file.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A JSON POST. A log fragment also names its log's batch path (`v1::log_batch_path`),
    /// where it may go together with the fragments queued behind it. (An agent from before
    /// batches ignores the field and posts it alone.)
    Post {
        path: String,
        body: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
    },
    /// A file (relative to the outbox directory) uploaded as the multipart field `file`.
    Upload { path: String, file: String },
    /// Nothing to send: the job's last entry is in.
    Done,
}

/// Where an outbox's entries go: the server (`host::ServerLink`); in tests, a stand-in
/// that fails on cue.
pub trait Transport: Send + Sync + 'static {
    fn post(&self, path: &str, body: &Value) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Posts several fragments to a batch path (`v1::log_batch_path`) in one request.
    fn post_batch(
        &self,
        path: &str,
        fragments: &[&Value],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn upload(
        &self,
        path: &str,
        upload: Upload,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Whether the server takes batches, as far as its answers told: shared by every
    /// outbox that sends to it, so a server without them is asked once.
    fn batches(&self) -> &Batches;
}

/// Whether a server takes fragment batches: assumed until it answers one as a request it
/// does not know (a reference server, or an older `tf serve`).
#[derive(Default)]
pub struct Batches {
    unknown_to_server: AtomicBool,
}

impl Batches {
    fn wanted(&self) -> bool {
        !self.unknown_to_server.load(Ordering::Relaxed)
    }

    /// The server answered a batch as a request it does not know: send fragments one by
    /// one from now on.
    fn unknown(&self) {
        self.unknown_to_server.store(true, Ordering::Relaxed);
    }

    /// Another server answers now (its extensions changed): try batches again.
    pub fn forget(&self) {
        self.unknown_to_server.store(false, Ordering::Relaxed);
    }
}

/// The statuses that say a server does not know the batch form: no such path (404), not
/// for this method (405), or a body it cannot read (400).
fn batches_unknown(error: &ApiError) -> bool {
    matches!(error.status().map(|s| s.as_u16()), Some(400 | 404 | 405))
}

/// The most bytes of entries one batch carries (a serial log's pieces are 1 MiB each);
/// well within `tf serve`'s default body limit (16 MiB).
const MAX_BATCH_BYTES: u64 = 4 << 20;

/// One whole line of the outbox: its entry (`None` if it cannot be read) and its length.
struct Line {
    entry: Option<Entry>,
    bytes: u64,
}

impl Line {
    /// Where this line may go together with its neighbours: a fragment's batch path.
    fn batch_path(&self) -> Option<&str> {
        match &self.entry {
            Some(Entry::Post {
                batch: Some(path), ..
            }) => Some(path),
            _ => None,
        }
    }
}

/// The background half: sends entries in file order, one at a time, except that
/// fragments of one log queued one behind the other go in one batch where the server
/// takes batches. Progress is recorded once the server took an entry (or a batch), so
/// after a lost answer or an agent restart the same entries are sent again.
pub struct Sender<T> {
    server: Arc<T>,
    dir: PathBuf,
    reader: BufReader<File>,
    /// Where the reader is: the end of the last line read.
    read: u64,
    /// A line read past the end of a batch, to be sent next.
    next: Option<Line>,
    sent: u64,
    sent_marker: File,
    appended: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
}

impl<T: Transport> Sender<T> {
    /// A sender of the entries in `entries` (the outbox file in `dir`), from byte `sent`
    /// on (recorded in `sent_marker` as it goes, and told to `progress`), as `appended`
    /// says more is in.
    pub fn new(
        server: Arc<T>,
        dir: &Path,
        entries: File,
        sent: u64,
        sent_marker: File,
        appended: watch::Receiver<u64>,
        progress: watch::Sender<u64>,
    ) -> Sender<T> {
        Sender {
            server,
            dir: dir.to_path_buf(),
            reader: BufReader::new(entries),
            read: sent,
            next: None,
            sent,
            sent_marker,
            appended,
            progress,
        }
    }

    pub async fn run(mut self) {
        if self.reader.seek(SeekFrom::Start(self.sent)).is_err() {
            return;
        }
        while let Some(first) = self.next_line().await {
            let mut group = self.gather(first);
            if group.len() > 1 {
                self.deliver_batch(group).await;
            } else if let Some(line) = group.pop() {
                self.deliver_line(line).await;
            }
        }
    }

    /// Waits for the next whole line; `None` once the outbox was dropped.
    async fn next_line(&mut self) -> Option<Line> {
        if let Some(line) = self.next.take() {
            return Some(line);
        }
        loop {
            if *self.appended.borrow_and_update() <= self.read {
                self.appended.changed().await.ok()?;
                continue;
            }
            match self.read_line() {
                Some(line) => return Some(line),
                // Appended entries are whole lines; anything else is a read that raced
                // the write. Read it again shortly.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The line at `read`, or `None` (and the reader put back) when it is not whole yet.
    fn read_line(&mut self) -> Option<Line> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {}
            _ => {
                let _ = self.reader.seek(SeekFrom::Start(self.read));
                return None;
            }
        }
        self.read += line.len() as u64;
        let entry = serde_json::from_slice::<Entry>(&line)
            .inspect_err(|error| tracing::warn!("skipping an unreadable outbox entry: {error}"))
            .ok();
        Some(Line {
            entry,
            bytes: line.len() as u64,
        })
    }

    /// `first`, and when it is a fragment and the server takes batches, the fragments of
    /// the same log already queued right behind it, within a batch's bounds.
    fn gather(&mut self, first: Line) -> Vec<Line> {
        let Some(batch) = first.batch_path().map(str::to_string) else {
            return vec![first];
        };
        if !self.server.batches().wanted() {
            return vec![first];
        }
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while group.len() < v1::MAX_BATCH_FRAGMENTS && *self.appended.borrow() > self.read {
            let Some(line) = self.read_line() else {
                break;
            };
            if line.batch_path() != Some(&batch) || bytes + line.bytes > MAX_BATCH_BYTES {
                self.next = Some(line);
                break;
            }
            bytes += line.bytes;
            group.push(line);
        }
        group
    }

    /// Sends `group` (fragments of one log) as one batch. If the server does not take
    /// it, each fragment goes on its own, as to a server without batches.
    async fn deliver_batch(&mut self, group: Vec<Line>) {
        let mut path = "";
        let mut fragments = Vec::with_capacity(group.len());
        for line in &group {
            if let Some(Entry::Post {
                body,
                batch: Some(batch),
                ..
            }) = &line.entry
            {
                path = batch;
                fragments.push(body);
            }
        }
        let outcome = persist(Retry::after_batch, || {
            self.server.post_batch(path, &fragments)
        })
        .await;
        match outcome {
            Ok(()) => {
                self.record(group.iter().map(|line| line.bytes).sum());
                return;
            }
            Err(error) if batches_unknown(&error) => {
                tracing::info!("the server does not take log batches ({error}); sending fragments one at a time");
                self.server.batches().unknown();
            }
            Err(error) => {
                tracing::warn!("the server did not take a batch of fragments ({error}); sending them one at a time");
            }
        }
        for line in group {
            self.deliver_line(line).await;
        }
    }

    async fn deliver_line(&mut self, line: Line) {
        if let Some(entry) = &line.entry {
            self.deliver(entry).await;
        }
        self.record(line.bytes);
    }

    /// Notes that the next `bytes` of entries were delivered (or given up on).
    fn record(&mut self, bytes: u64) {
        self.sent += bytes;
        let digits = format!("{:020}", self.sent);
        if let Err(error) = self.sent_marker.write_all_at(digits.as_bytes(), 0) {
            tracing::warn!("cannot record outbox progress: {error}");
        }
        self.progress.send_replace(self.sent);
    }

    /// Sends one entry until the server takes it or refuses it for good.
    async fn deliver(&self, entry: &Entry) {
        let outcome = match entry {
            Entry::Done => return,
            Entry::Post { path, body, .. } => {
                persist(Retry::after, || self.server.post(path, body)).await
            }
            Entry::Upload { path, file } => {
                let upload = Upload {
                    file: self.dir.join(file),
                    field: "file".into(),
                    filename: "file".into(),
                    content_type: "application/x-gzip".into(),
                };
                persist(Retry::after, || self.server.upload(path, upload.clone())).await
            }
        };
        if let Err(error) = outcome {
            tracing::error!("the server refused a report, dropping it: {error}");
        }
    }
}

/// Sends with `send` until the server takes it (`Ok`), waiting out what `policy` says will
/// pass, or until it refuses for good (the last error).
async fn persist<F: Future<Output = Result<(), ApiError>>>(
    policy: fn(&ApiError, u32) -> Retry,
    send: impl Fn() -> F,
) -> Result<(), ApiError> {
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0;
    loop {
        let error = match send().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        attempts += 1;
        match policy(&error, attempts) {
            Retry::Later => {
                tracing::warn!("{error}; will resend in {}ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Retry::GiveUp => return Err(error),
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

    /// As `after`, except that a batch refused as unauthorized goes one fragment at a
    /// time at once: a proxy may let only the reference's paths through, and if it is
    /// the credentials, the single posts wait for them as any report does.
    fn after_batch(error: &ApiError, attempts: u32) -> Retry {
        match error.status().map(|status| status.as_u16()) {
            Some(401 | 403) => Retry::GiveUp,
            _ => Retry::after(error, attempts),
        }
    }
}
