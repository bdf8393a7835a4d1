//! Wake-ups between the servers on one database, through PostgreSQL's `LISTEN/NOTIFY`: a
//! claim long-polling on one server returns as soon as a job is submitted through
//! another, a log follower wakes when another server stores a fragment, and an agent's
//! stop reaches the server its claim waits on.
//!
//! Each server sends its wake-ups (`Signals`) on the channel `tf_wakeups`, each tagged
//! with the server's own random name so that it skips its own. They are sent after the
//! write they announce has committed, in a statement of their own, never inside the
//! write: a full notification queue (a server that stopped reading) can delay wake-ups
//! but never fail a write. The wake-ups waiting to go are sent together in one
//! statement, each once: a job that took a thousand fragments meanwhile is one
//! notification, not a thousand.
//!
//! A notification is lost when its server dies between commit and notify, or while a
//! listener's connection is down. Waiters therefore look again every `RECHECK`, queues
//! with claimable jobs are read again every few seconds (`claimable`), and a listener
//! that reconnects reads them and has every waiter look again at once.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification};

use super::claimable::mark_claimable;
use super::database::Database;
use super::pool::Connections;
use crate::store::claimable::ClaimableQueues;
use crate::store::error::{Result, StoreError};
use crate::store::signals::{Signals, Wakeup};

/// The channel every server listens and notifies on.
const CHANNEL: &str = "tf_wakeups";

/// How often waiters look again for what a lost notification would have told them.
pub(super) const RECHECK: Duration = Duration::from_secs(2);

/// How often a listener checks that its connection still answers: a connection cut
/// without a word (a failover, a cable) would otherwise leave it deaf for hours.
const PING: Duration = Duration::from_secs(10);

/// How long a ping, or a connection attempt, may take before the connection is given up.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a listener waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

/// PostgreSQL refuses payloads of 8,000 bytes or more; a key that long (a queue name,
/// say) is left to the rechecks.
const MAX_PAYLOAD: usize = 7_999;

/// Relays `signals`' wake-ups to the other servers on `database`, and theirs to
/// `signals` (marking queues in `claimable` first, so the claims they wake find them);
/// waiters look again every `recheck`. Both tasks end once `signals` is dropped.
pub(super) fn start(
    database: Database,
    connections: Connections,
    claimable: Arc<ClaimableQueues>,
    signals: &Arc<Signals>,
    recheck: Duration,
) {
    let server = uuid::Uuid::new_v4().simple().to_string();
    let (outbox, wakeups) = mpsc::unbounded_channel();
    signals.relay_to(outbox, recheck);
    tokio::spawn(send(wakeups, connections.clone(), server.clone()));
    tokio::spawn(listen(
        database,
        connections,
        claimable,
        Arc::downgrade(signals),
        server,
    ));
}

/// The text of a notification: the sending server, what kind of wake-up, its key.
fn encode(server: &str, wakeup: &Wakeup) -> String {
    let (kind, key) = match wakeup {
        Wakeup::Queue(queue) => ('q', queue),
        Wakeup::Job(job_id) => ('j', job_id),
        Wakeup::Agent(agent) => ('a', agent),
    };
    format!("{server} {kind} {key}")
}

/// The sending server and the wake-up of a notification's text; `None` for text that
/// is not one (another program on the channel).
fn decode(payload: &str) -> Option<(&str, Wakeup)> {
    let mut parts = payload.splitn(3, ' ');
    let (server, kind, key) = (parts.next()?, parts.next()?, parts.next()?.to_string());
    let wakeup = match kind {
        "q" => Wakeup::Queue(key),
        "j" => Wakeup::Job(key),
        "a" => Wakeup::Agent(key),
        _ => return None,
    };
    Some((server, wakeup))
}

/// Sends the wake-ups of this server as they come, those that came together in one
/// statement. A database away loses them (the rechecks cover it).
async fn send(
    mut wakeups: mpsc::UnboundedReceiver<Wakeup>,
    connections: Connections,
    server: String,
) {
    let mut batch = HashSet::new();
    while let Some(wakeup) = wakeups.recv().await {
        batch.insert(wakeup);
        while let Ok(wakeup) = wakeups.try_recv() {
            batch.insert(wakeup);
        }
        let payloads: Vec<String> = batch
            .drain()
            .map(|wakeup| encode(&server, &wakeup))
            .filter(|payload| payload.len() <= MAX_PAYLOAD)
            .collect();
        if let Err(error) = notify(&connections, &payloads).await {
            tracing::warn!(
                "telling the other servers of {} wake-ups: {error}",
                payloads.len()
            );
        }
    }
}

async fn notify(connections: &Connections, payloads: &[String]) -> Result<()> {
    let db = connections.get().await?;
    let statement = db
        .prepare_cached("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .await?;
    db.execute(&statement, &[&CHANNEL, &payloads]).await?;
    Ok(())
}

/// Delivers the other servers' wake-ups here, connecting again whenever the connection
/// is lost; after each (re)connection, what may have been missed is looked at again.
async fn listen(
    database: Database,
    connections: Connections,
    claimable: Arc<ClaimableQueues>,
    signals: Weak<Signals>,
    server: String,
) {
    let mut said_lost = false;
    while signals.strong_count() > 0 {
        match connect_listening(&database).await {
            Ok((client, mut notifications)) => {
                if said_lost {
                    tracing::info!("listening to the other servers' wake-ups again");
                    said_lost = false;
                }
                look_again(&connections, &claimable, &signals).await;
                let ended = deliver(&client, &mut notifications, &claimable, &signals, &server);
                if let Err(error) = ended.await {
                    tracing::warn!("stopped hearing the other servers' wake-ups: {error}");
                    said_lost = true;
                }
            }
            Err(error) if !said_lost => {
                tracing::warn!("cannot listen to the other servers' wake-ups: {error}");
                said_lost = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Marks the queues with claimable jobs and has every waiter look again: notifications
/// sent while nobody listened are gone.
async fn look_again(
    connections: &Connections,
    claimable: &ClaimableQueues,
    signals: &Weak<Signals>,
) {
    let marked = match connections.get().await {
        Ok(db) => mark_claimable(claimable, &db).await,
        Err(error) => Err(error),
    };
    if let Err(error) = marked {
        tracing::warn!("reading the queues with claimable jobs: {error}");
    }
    if let Some(signals) = signals.upgrade() {
        signals.all_look_again();
    }
}

/// Delivers notifications until the connection fails (`Err`) or the store is gone
/// (`Ok`), pinging the database every `PING` when it is quiet.
async fn deliver(
    client: &Client,
    notifications: &mut mpsc::UnboundedReceiver<Notification>,
    claimable: &ClaimableQueues,
    signals: &Weak<Signals>,
    server: &str,
) -> Result<()> {
    loop {
        let notification = match tokio::time::timeout(PING, notifications.recv()).await {
            Ok(Some(notification)) => notification,
            Ok(None) => return Err(StoreError::Unavailable("the connection closed".into())),
            Err(_quiet) if signals.strong_count() == 0 => return Ok(()),
            Err(_quiet) => {
                ping(client).await?;
                continue;
            }
        };
        let Some(signals) = signals.upgrade() else {
            return Ok(());
        };
        let Some((from, wakeup)) = decode(notification.payload()) else {
            continue;
        };
        if from == server {
            continue;
        }
        if let Wakeup::Queue(queue) = &wakeup {
            claimable.mark(queue);
        }
        signals.wake_from_elsewhere(&wakeup);
    }
}

async fn ping(client: &Client) -> Result<()> {
    match tokio::time::timeout(PING_TIMEOUT, client.simple_query("")).await {
        Ok(answered) => answered.map(drop).map_err(StoreError::from),
        Err(_) => Err(StoreError::Unavailable(format!(
            "the database did not answer within {}s",
            PING_TIMEOUT.as_secs()
        ))),
    }
}

/// A connection of its own (not the pool's: it must stay open, listening), with its
/// notifications.
async fn connect_listening(
    database: &Database,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)> {
    let (config, tls) = database.transport()?;
    let connecting = async {
        match tls {
            None => Ok(drive(config.connect(NoTls).await?)),
            Some(tls) => Ok::<_, StoreError>(drive(config.connect(tls).await?)),
        }
    };
    let (client, notifications) = tokio::time::timeout(PING_TIMEOUT, connecting)
        .await
        .map_err(|_| StoreError::Unavailable("connecting took too long".into()))??;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, notifications))
}

/// Drives `connection` in a task of its own, handing its notifications out.
fn drive<S, T>(
    (client, mut connection): (Client, Connection<S, T>),
) -> (Client, mpsc::UnboundedReceiver<Notification>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message {
                if sender.send(notification).is_err() {
                    return;
                }
            }
        }
    });
    (client, notifications)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Jobs;
    use crate::store::jobs::NewJob;
    use crate::store::postgres::PostgresBackend;
    use tf_test_support::postgres::Postgres;

    /// A server's backend and signals, relaying; its fallbacks (re-marking queues, waiters
    /// looking again) an hour apart, so that what arrives, arrives by notification.
    async fn server(database: &Database) -> (PostgresBackend, Arc<Signals>) {
        let hour = Duration::from_secs(3600);
        let backend = PostgresBackend::open_remarking_every(database, hour)
            .await
            .expect("open");
        let signals = Arc::new(Signals::default());
        start(
            database.clone(),
            backend.connections.clone(),
            backend.claimable.clone(),
            &signals,
            hour,
        );
        (backend, signals)
    }

    /// Waits for `notified` as a test may: long enough for any machine, not forever.
    async fn within_a_minute(notified: impl std::future::Future<Output = ()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(60), notified)
            .await
            .unwrap_or_else(|_| panic!("{what} never reached the other server"));
    }

    #[tokio::test]
    async fn what_one_server_does_wakes_the_waiters_of_another() {
        let cluster = Postgres::start();
        let database = Database::parse(&cluster.create_database("tf")).expect("url");
        let (here, here_signals) = server(&database).await;
        let (there, there_signals) = server(&database).await;
        let queues = ["q".to_string()];
        // A claim here finds the queue empty (and unmarks it), then waits.
        assert!(here
            .claim_job(&queues, "a1")
            .await
            .expect("claim")
            .is_none());
        let queue = here_signals.queue("q");
        let job = here_signals.job("from-there");
        let agent = here_signals.agent("a1");
        let (job_queued, job_changed, agent_stopping) = (
            queue.notify.notified(),
            job.notify.notified(),
            agent.notify.notified(),
        );
        tokio::pin!(job_queued, job_changed, agent_stopping);
        for notified in [
            job_queued.as_mut(),
            job_changed.as_mut(),
            agent_stopping.as_mut(),
        ] {
            notified.enable();
        }

        there
            .insert_job(NewJob::plain("from-there", "q", 0))
            .await
            .expect("insert");
        there_signals.wake_queue("q");
        within_a_minute(job_queued, "a submit").await;
        let claimed = here.claim_job(&queues, "a1").await.expect("claim");
        assert_eq!(claimed.expect("the queue was marked").job_id, "from-there");

        there_signals.wake_job("from-there");
        within_a_minute(job_changed, "a job's change").await;
        there_signals.wake_agent("a1");
        within_a_minute(agent_stopping, "an agent's stop").await;
    }

    #[test]
    fn a_wakeup_reads_back_as_sent_whatever_its_key_holds() {
        for wakeup in [
            Wakeup::Queue("rpi4 lab:2".into()),
            Wakeup::Job("3f0c".into()),
            Wakeup::Agent("agent 7".into()),
        ] {
            let text = encode("me", &wakeup);
            assert_eq!(decode(&text), Some(("me", wakeup)));
        }
        assert_eq!(decode("another program's words"), None);
        assert_eq!(decode("alone"), None);
    }
}
