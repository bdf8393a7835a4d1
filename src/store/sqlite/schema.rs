//! The database schema, versioned with `PRAGMA user_version`. Each migration runs once,
//! in order, in its own transaction; add new ones at the end, never edit old ones.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 1: the whole v1 API.
    r#"
    CREATE TABLE jobs (
        seq            INTEGER PRIMARY KEY,
        job_id         TEXT NOT NULL UNIQUE,
        queue          TEXT NOT NULL,
        state          TEXT NOT NULL,
        priority       INTEGER NOT NULL,
        created_at     INTEGER NOT NULL,  -- microseconds since the epoch, UTC
        started_at     INTEGER,
        attachments    TEXT,              -- NULL, 'waiting' or 'complete'
        exclude_agents TEXT,              -- JSON array, NULL when empty
        client_id      TEXT,
        job_data       TEXT NOT NULL,     -- the validated submission, JSON
        status         TEXT,              -- JSON {phase: exit code}
        device_info    TEXT               -- JSON object
    );
    -- Dispatch reads the waiting jobs of a queue best first (ties: rowid = seq); the
    -- same index lists a queue's jobs. (Replaced by migration 9.)
    CREATE INDEX jobs_by_queue ON jobs (queue, state, priority DESC, created_at);
    CREATE INDEX jobs_by_age ON jobs (created_at);

    -- A rowid table: fragments can be large, which suits a clustered key poorly.
    CREATE TABLE log_fragments (
        job_id          TEXT NOT NULL,
        log_type        TEXT NOT NULL,
        fragment_number INTEGER NOT NULL,
        phase           TEXT NOT NULL,
        timestamp       INTEGER NOT NULL,  -- microseconds, as sent by the agent
        log_data        TEXT NOT NULL,
        stored_at       INTEGER NOT NULL,
        UNIQUE (job_id, log_type, fragment_number)
    );
    -- No index on stored_at: fragments are appended in time order, so expiry bisects on
    -- rowid instead of making every fragment write maintain one more index.

    CREATE TABLE blobs (
        job_id    TEXT NOT NULL,
        kind      TEXT NOT NULL,           -- 'attachments' or 'artifact'
        file_name TEXT NOT NULL,           -- under <data-dir>/blobs/
        size      INTEGER NOT NULL,
        stored_at INTEGER NOT NULL,
        PRIMARY KEY (job_id, kind)
    );
    CREATE INDEX blobs_by_age ON blobs (stored_at);

    CREATE TABLE agents (
        name       TEXT PRIMARY KEY,
        fields     TEXT NOT NULL,          -- JSON object of the reported fields
        log        TEXT NOT NULL DEFAULT '[]',
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX agents_by_age ON agents (updated_at);

    CREATE TABLE provision_logs (
        seq       INTEGER PRIMARY KEY,
        agent     TEXT NOT NULL,
        job_id    TEXT NOT NULL,
        exit_code INTEGER NOT NULL,
        detail    TEXT,
        timestamp INTEGER NOT NULL
    );
    CREATE INDEX provision_logs_by_agent ON provision_logs (agent, seq);

    CREATE TABLE queues (
        name        TEXT PRIMARY KEY,
        description TEXT,
        images      TEXT,                  -- JSON {image: provision data}
        updated_at  INTEGER                -- NULL: only images were posted
    );

    CREATE TABLE wait_times (
        queue       TEXT NOT NULL,
        seconds     INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL
    );
    CREATE INDEX wait_times_by_queue ON wait_times (queue);
    CREATE INDEX wait_times_by_age ON wait_times (recorded_at);
    "#,
    // 2: clients, tokens, restricted queues and secrets.
    r#"
    CREATE TABLE clients (
        client_id            TEXT PRIMARY KEY,
        secret_hash          TEXT,             -- bcrypt; the secret itself is never stored
        role                 TEXT NOT NULL,
        max_priority         TEXT,             -- JSON {queue or "*": priority}
        allowed_queues       TEXT,             -- JSON [queue]
        max_reservation_time TEXT,             -- JSON {queue or "*": seconds}
        email                TEXT,
        created_at           INTEGER NOT NULL
    );

    CREATE TABLE refresh_tokens (
        token_hash    TEXT PRIMARY KEY,        -- SHA-256 of the token, never the token
        client_id     TEXT NOT NULL,
        issued_at     INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        last_accessed INTEGER NOT NULL,
        revoked       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_tokens_by_use ON refresh_tokens (last_accessed);

    CREATE TABLE restricted_queues (
        queue TEXT PRIMARY KEY
    );

    CREATE TABLE secrets (
        client_id  TEXT NOT NULL,
        path       TEXT NOT NULL,
        nonce      BLOB NOT NULL,
        ciphertext BLOB NOT NULL,              -- ChaCha20-Poly1305 under the master key
        ephemeral  INTEGER NOT NULL,
        expires_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, path)
    );
    "#,
    // 3: the Redis-era result API (store/legacy.rs); rows go with their job.
    r#"
    CREATE TABLE legacy_results (
        job_id   TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
        document TEXT NOT NULL             -- JSON object: the free-form keys old agents post
    );

    CREATE TABLE legacy_stream_reads (
        job_id        TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
        log_type      TEXT NOT NULL,
        next_fragment INTEGER NOT NULL,    -- the first fragment the next read returns
        PRIMARY KEY (job_id, log_type)
    ) WITHOUT ROWID;
    "#,
    // 4: which agent took each job, for an agent's page.
    r#"
    ALTER TABLE jobs ADD COLUMN agent TEXT;    -- NULL until claimed, or for tokenless agents
    CREATE INDEX jobs_by_agent ON jobs (agent, seq) WHERE agent IS NOT NULL;
    "#,
    // 5: the database's name, which the blob directory repeats (store/blobs.rs), so the
    // orphan sweep knows the archives there are this database's to account for.
    r#"
    CREATE TABLE store_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO store_meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
    "#,
    // 6: how each job ended, worked out once as it completes (job/outcome.rs); NULL for
    // jobs that completed before, whose outcome is derived from `status` when read.
    r#"
    ALTER TABLE jobs ADD COLUMN outcome TEXT;  -- job::Outcome::encode()
    "#,
    // 7: refresh token renewal (server/tokens.rs): each token is renewed at most once, to
    // the successor recorded here, and every token renewed from one login is of its
    // family, which is revoked as one.
    r#"
    ALTER TABLE refresh_tokens ADD COLUMN successor TEXT;  -- the successor's token_hash
    ALTER TABLE refresh_tokens ADD COLUMN family TEXT;     -- the first token's token_hash
    UPDATE refresh_tokens SET family = token_hash;
    CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
    "#,
    // 8: every claim records its wait; expiry finds the old ones by rowid (as for log
    // fragments, store/retention.rs), so the claim no longer keeps an index by age.
    r#"
    DROP INDEX wait_times_by_age;
    "#,
    // 9: dispatch reads only the waiting jobs of a queue, best first, from an index of
    // waiting jobs alone: a claim takes one entry out of it instead of moving the job
    // within an index of every state. Listings by queue use an index a claim leaves alone.
    r#"
    DROP INDEX jobs_by_queue;
    CREATE INDEX jobs_of_queue ON jobs (queue);
    CREATE INDEX jobs_waiting ON jobs (queue, priority DESC, created_at) WHERE state = 'waiting';
    "#,
    // 10: a claim records the job's wait in the same statement that claims it, so the
    // claim is one statement, atomic without a savepoint (store/jobs.rs::claim).
    r#"
    CREATE TRIGGER jobs_record_wait AFTER UPDATE OF state ON jobs
    WHEN old.state = 'waiting' AND new.state = 'running'
    BEGIN
        INSERT INTO wait_times (queue, seconds, recorded_at)
        VALUES (new.queue, (new.started_at - new.created_at) / 1000000, new.started_at);
    END;
    "#,
];

/// Applies the migrations this database lacks. The version is read inside each
/// migration's write transaction, so a second process migrating at the same moment
/// waits, then sees the migration done instead of applying it twice.
/// The schema version this tf writes: the number of migrations.
pub fn current_version() -> usize {
    MIGRATIONS.len()
}

pub fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    loop {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: usize = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let Some(migration) = MIGRATIONS.get(applied) else {
            return Ok(());
        };
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", applied + 1)?;
        transaction.commit()?;
    }
}

/// The database's store id (see migration 5), and whether it records any archive.
pub fn store_identity(connection: &Connection) -> rusqlite::Result<(String, bool)> {
    connection.query_row(
        "SELECT value, EXISTS (SELECT 1 FROM blobs) FROM store_meta WHERE key = 'store_id'",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}
