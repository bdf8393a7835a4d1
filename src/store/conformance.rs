//! One scripted story of a lab, told through `Store` on each backend: both must give the
//! same answers to the same calls. The server suite checks the HTTP side on both backends
//! (`TF_TEST_BACKEND=postgres`); this checks the seam itself, call by call.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tf_test_support::postgres::Postgres;

use super::health::IfLost;
use super::postgres::Database;
use super::{
    Client, DatabaseChoice, Expiry, Fragment, FragmentQuery, JobFilter, NewJob, RefreshTokens,
    Renewal, ResultUpdate, SecretsKey, ServerDataDir, Store, StoreError, SyncMode,
};
use crate::job::time;
use crate::job::{Outcome, Phase};

/// A job of the story: tagged with the story and its own id.
fn job(id: &str, queue: &str, priority: i64) -> NewJob {
    let mut job = NewJob::plain(id, queue, priority);
    job.data.insert("tags".to_string(), json!(["story", id]));
    job
}

fn fragment(number: i64, phase: Phase, text: &str) -> Fragment {
    Fragment {
        fragment_number: number,
        phase,
        timestamp: time::now(),
        log_data: text.to_string(),
    }
}

fn statuses(value: Value) -> Option<Map<String, Value>> {
    value.as_object().cloned()
}

async fn story(store: Store) {
    let at_once = Duration::ZERO;
    let queues = ["story".to_string()];

    // Submitting: a taken id is refused.
    store.submit_job(job("first", "story", 0)).await.unwrap();
    store.submit_job(job("urgent", "story", 5)).await.unwrap();
    let awaiting = NewJob {
        awaits_attachments: true,
        ..job("with-archive", "story", 9)
    };
    store.submit_job(awaiting).await.unwrap();
    assert!(matches!(
        store.submit_job(job("first", "story", 0)).await,
        Err(StoreError::DuplicateJob(id)) if id == "first"
    ));
    assert_eq!(store.queue_position("first").await.unwrap(), Some(2));

    // Claiming: priority first, a job awaiting its archive is skipped, then nothing.
    let claimed = store.claim_job(&queues, "rack-1", at_once).await.unwrap();
    assert_eq!(claimed.map(|job| job.job_id).as_deref(), Some("urgent"));
    let claimed = store
        .claim_job(&queues, "rack-1", at_once)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job_id, "first");
    assert_eq!(claimed.data["tags"], json!(["story", "first"]));
    assert!(store
        .claim_job(&queues, "rack-2", at_once)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.wait_times(vec![]).await.unwrap()["story"].len(), 2);

    // Logs: a resent fragment replaces the first copy; each phase reads its own text.
    let log = vec![
        fragment(0, Phase::Setup, "setting up\n"),
        fragment(1, Phase::Test, "tsting\n"),
    ];
    store
        .append_log_fragments("first", "output", log)
        .await
        .unwrap();
    let resent = fragment(1, Phase::Test, "testing\n");
    store
        .append_log_fragment("first", "output", resent)
        .await
        .unwrap();
    let logs = store
        .log("first", "output", FragmentQuery::default(), at_once)
        .await
        .unwrap();
    let text_of = |phase: &str| {
        let log = logs.iter().find(|log| log.phase == phase).unwrap();
        (log.last_fragment_number, log.log_data.clone())
    };
    assert_eq!(text_of("setup"), (0, "setting up\n".to_string()));
    assert_eq!(text_of("test"), (1, "testing\n".to_string()));

    // Results: progress, then the final report with its outcome.
    let progress = ResultUpdate {
        job_state: Some("test".into()),
        status: statuses(json!({"setup": 0})),
        device_info: None,
    };
    store.update_result("first", progress).await.unwrap();
    let done = ResultUpdate {
        job_state: Some("complete".into()),
        status: statuses(json!({"setup": 0, "test": 1})),
        device_info: Some(json!({"serial": "A1"})),
    };
    store.update_result("first", done).await.unwrap();
    let result = store.result("first").await.unwrap().unwrap();
    assert_eq!(result.job_state, "complete");
    assert_eq!(
        result.outcome,
        Some(Outcome::Failed {
            phase: Phase::Test,
            exit_code: 1
        })
    );
    assert_eq!(result.device_info, Some(json!({"serial": "A1"})));
    let full = store.full_logs("first").await.unwrap();
    assert!(full.contains(&("test".into(), "output".into(), "testing\n".into())));

    // Cancelling: once, and a finished job not at all.
    assert!(store.cancel_job("with-archive").await.unwrap());
    assert!(!store.cancel_job("with-archive").await.unwrap());
    assert!(!store.cancel_job("first").await.unwrap());

    // Listings.
    let active = JobFilter {
        active: true,
        ..JobFilter::default()
    };
    let ids =
        |jobs: Vec<super::JobSummary>| jobs.into_iter().map(|job| job.job_id).collect::<Vec<_>>();
    assert_eq!(ids(store.search_jobs(active).await.unwrap()), ["urgent"]);
    let tagged = JobFilter {
        tags: vec!["first".into(), "story".into()],
        match_all_tags: true,
        newest_first: true,
        ..JobFilter::default()
    };
    assert_eq!(ids(store.search_jobs(tagged).await.unwrap()), ["first"]);
    assert_eq!(
        ids(store.queue_jobs("story").await.unwrap()),
        ["first", "urgent", "with-archive"]
    );
    assert_eq!(
        ids(store.agent_jobs("rack-1", 10).await.unwrap()),
        ["urgent", "first"]
    );

    // Secrets: sealed at rest, a read-once one gone after its read.
    store
        .put_secret("ci", "lab/token", "s3cret", Expiry::AfterFirstRead)
        .await
        .unwrap();
    assert_eq!(
        store
            .missing_secrets("ci", vec!["lab/token".into(), "lab/none".into()])
            .await
            .unwrap(),
        ["lab/none"]
    );
    assert_eq!(
        store
            .take_secret("ci", "lab/token")
            .await
            .unwrap()
            .as_deref(),
        Some("s3cret")
    );
    assert_eq!(store.take_secret("ci", "lab/token").await.unwrap(), None);

    // Clients and refresh tokens.
    let client = Client {
        client_id: "ci".into(),
        role: "contributor".into(),
        ..Client::default()
    };
    assert!(store
        .save_client(client, Some("hash".into()), RefreshTokens::Keep)
        .await
        .unwrap());
    let day = Duration::from_secs(86_400);
    assert!(store
        .store_refresh_token("token".into(), "ci", day, None)
        .await
        .unwrap());
    assert_eq!(
        store
            .renew_refresh_token("token".into(), "next".into(), day)
            .await
            .unwrap(),
        Renewal::Renewed
    );
    store.restrict_queue("story", "ci").await.unwrap();
    assert!(store.is_restricted("story").await.unwrap());
    assert_eq!(
        store.restricted_queues().await.unwrap(),
        [("story".to_string(), vec!["ci".to_string()])]
    );
    store.unrestrict_queue("story", "ci").await.unwrap();
    assert!(!store.is_restricted("story").await.unwrap());

    // Expiry: everything older than now goes, in batches, and nothing newer.
    let expired = store.expire(time::now() + 1).await.unwrap();
    assert_eq!((expired.jobs, expired.fragments), (3, 2));
    assert!(store.job_record("first").await.unwrap().is_none());
    store.submit_job(job("later", "story", 0)).await.unwrap();
    assert_eq!(store.expire(0).await.unwrap().jobs, 0);
}

/// Tells the story on a fresh data dir whose records `database` keeps.
fn tell_story(database: DatabaseChoice) {
    let data = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let claimed = ServerDataDir::claim(data.path(), &database, IfLost::Refuse).expect("claim");
    runtime.block_on(async {
        let key = SecretsKey::new(&[7; 32]);
        let store = claimed.open(database, Some(key)).await.expect("open");
        story(store).await
    });
}

#[test]
fn the_story_on_sqlite() {
    tell_story(DatabaseChoice::Sqlite(SyncMode::Normal));
}

#[test]
fn the_story_on_postgres() {
    let cluster = Postgres::start();
    let url = cluster.create_database("story");
    let database = Database::parse(&url).expect("url");
    tell_story(DatabaseChoice::Postgres(Box::new(database)));
}
