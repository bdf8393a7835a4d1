//! A throwaway PostgreSQL cluster for the tests that run tf on PostgreSQL: `initdb` and
//! `pg_ctl` of the machine's PostgreSQL (Debian's `postgresql` package), a cluster in a
//! temporary directory listening on a free loopback port, stopped and removed when dropped.
//!
//! `initdb` refuses to run as root, so as root (CI, containers) every PostgreSQL program
//! runs as the `postgres` user through `runuser`, and the cluster's directory is given to
//! that user. Connections are trusted on loopback only: the cluster holds nothing but test
//! data and lives as long as one test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The user PostgreSQL's programs run as when the tests run as root.
const SERVICE_USER: &str = "postgres";

/// The role tf connects as, created with the cluster.
pub const ROLE: &str = "tf";

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// The server's settings, given again when it is started again (`resume`).
    options: String,
    as_root: bool,
    _temp: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh cluster; panics saying what is missing when PostgreSQL's server
    /// programs are not installed (`.ci/run` installs them). Commits are not flushed to
    /// the disk: tests run at the speed of memory.
    pub fn start() -> Postgres {
        Postgres::start_with("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    /// A cluster with PostgreSQL's durable defaults (each commit flushed to the disk), for
    /// benchmarks that compare it with SQLite.
    pub fn start_durable() -> Postgres {
        Postgres::start_with("")
    }

    fn start_with(settings: &str) -> Postgres {
        let bin = server_programs().unwrap_or_else(|| {
            panic!("PostgreSQL's initdb and pg_ctl were not found (apt install postgresql)")
        });
        let temp = tempfile::Builder::new()
            .prefix("tf-postgres-")
            .tempdir()
            .expect("temp dir");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            give_to_service_user(temp.path());
        }
        let data = temp.path().join("cluster");
        let port = free_port();
        // Sockets in the cluster's own directory: the system's (/run/postgresql) may not
        // exist or may belong to an installed cluster.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
             -c max_connections=200 {settings}",
            data.to_string_lossy()
        );
        let cluster = Postgres {
            bin,
            data,
            port,
            options,
            as_root,
            _temp: temp,
        };
        cluster.run_ok(
            "initdb",
            &[
                "--pgdata",
                &cluster.data_text(),
                "--username",
                ROLE,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.resume();
        cluster
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started on a port of its
    /// own: it replays what this one commits and takes over when `promote`d.
    pub fn standby(&self) -> Postgres {
        let temp = tempfile::Builder::new()
            .prefix("tf-postgres-standby-")
            .tempdir()
            .expect("temp dir");
        if self.as_root {
            give_to_service_user(temp.path());
        }
        let data = temp.path().join("cluster");
        let port = free_port();
        let standby = Postgres {
            bin: self.bin.clone(),
            options: format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
                 -c max_connections=200 -c fsync=off -c full_page_writes=off",
                data.to_string_lossy()
            ),
            data,
            port,
            as_root: self.as_root,
            _temp: temp,
        };
        let primary_port = self.port.to_string();
        standby.run_ok(
            "pg_basebackup",
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &primary_port,
                "--username",
                ROLE,
                "--pgdata",
                &standby.data_text(),
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                // At once, not spread over the primary's checkpoint interval (minutes).
                "--checkpoint",
                "fast",
                "--no-sync",
            ],
        );
        standby.resume();
        standby
    }

    /// Makes a standby the primary: it stops replaying and takes writes.
    pub fn promote(&self) {
        self.run_ok(
            "pg_ctl",
            &["promote", "--wait", "--pgdata", &self.data_text()],
        );
    }

    /// Starts the cluster's server (again, after `stop`), on the same port.
    pub fn resume(&self) {
        let log = self.data.join("server.log");
        self.run_ok(
            "pg_ctl",
            &[
                "start",
                "--wait",
                "--pgdata",
                &self.data_text(),
                "--log",
                &log.to_string_lossy(),
                "--options",
                &self.options,
            ],
        );
    }

    /// The URL of `database` on this cluster, as `tf serve --database` takes it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and gives its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with `psql` and gives what it printed (unaligned, tuples only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.sql_at(&self.url(database), sql)
    }

    /// `sql`, on the database of this cluster at `url`.
    pub fn sql_at(&self, url: &str, sql: &str) -> String {
        let output = self.run_ok(
            "psql",
            &[
                "--no-psqlrc",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                url,
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Runs `pgbench` with `args` on the database at `url` and gives what it printed.
    pub fn pgbench(&self, url: &str, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.push(url);
        String::from_utf8_lossy(&self.run_ok("pgbench", &all).stdout).into_owned()
    }

    /// A plain-text dump (`pg_dump`) of the database at `url`.
    pub fn dump(&self, url: &str) -> Vec<u8> {
        self.run_ok("pg_dump", &["--no-owner", url]).stdout
    }

    fn data_text(&self) -> String {
        self.data.to_string_lossy().into_owned()
    }

    /// Runs one of PostgreSQL's programs (as the service user when root); panics with its
    /// output when it fails.
    fn run_ok(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_root {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", SERVICE_USER, "--"]).arg(&path);
            runuser
        } else {
            Command::new(&path)
        };
        // The programs must not read the caller's settings or passwords.
        command
            .args(args)
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .env_remove("PGDATABASE")
            .env("PGPASSFILE", "/dev/null")
            .current_dir(&self.bin);
        let output = command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", path.display()));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Postgres {
    /// Stops the cluster at once: a test's data is not worth a clean shutdown.
    fn drop(&mut self) {
        self.stop_in("immediate");
    }
}

impl Postgres {
    /// Stops the cluster's server as an administrator's restart does (`pg_ctl stop`'s
    /// fast mode: clients are cut off, what was committed is kept); `resume` starts it
    /// again.
    pub fn stop(&self) {
        self.stop_in("fast");
    }

    fn stop_in(&self, mode: &str) {
        let path = self.bin.join("pg_ctl");
        let data = self.data_text();
        let args = ["stop", "--mode", mode, "--wait", "--pgdata", &data];
        let _ = if self.as_root {
            Command::new("runuser")
                .args(["-u", SERVICE_USER, "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        };
    }
}

/// The environment variable that runs the tests' servers on PostgreSQL: `postgres`.
pub const BACKEND_VARIABLE: &str = "TF_TEST_BACKEND";

/// Whether this test run keeps the servers' records in PostgreSQL (`TF_TEST_BACKEND=postgres`)
/// rather than in SQLite in their data dirs.
pub fn suite_on_postgres() -> bool {
    match std::env::var(BACKEND_VARIABLE).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{BACKEND_VARIABLE}={other}: say postgres or sqlite"),
    }
}

/// For a test of what only SQLite has (its database file, `tf migrate` out of it, `tf
/// backup`'s copy of it): true, saying so, when the run is on PostgreSQL, where such a
/// test has nothing to check. The test then returns at once.
pub fn skipped_on_postgres() -> bool {
    let skipped = suite_on_postgres();
    if skipped {
        // The test harness names each test's thread after the test.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("this test");
        eprintln!("{test}: a test of SQLite's own behaviour, skipped on PostgreSQL");
    }
    skipped
}

/// The databases the tf processes on each data dir keep their records in (see
/// `database_for`).
fn databases() -> std::sync::MutexGuard<'static, HashMap<PathBuf, String>> {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    DATABASES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// From now on, the tf processes the harness starts on `data_dir` keep their records in
/// the PostgreSQL database at `url`, whichever backend the run is on.
pub fn keep_records_in(data_dir: &Path, url: &str) {
    databases().insert(data_dir.to_path_buf(), url.to_string());
}

/// The database that the tf processes on `data_dir` keep their records in: the one
/// `keep_records_in` gave, or, when the run is on PostgreSQL, one per data dir in one
/// cluster for the whole test process (stopped as the process exits), created on first
/// use so that `tf clients` before a server and a server restarted on the same data dir
/// find the same records. `None`: SQLite in the data dir.
pub fn database_for(data_dir: &Path) -> Option<String> {
    let mut databases = databases();
    if let Some(url) = databases.get(data_dir) {
        return Some(url.clone());
    }
    if !suite_on_postgres() {
        return None;
    }
    let url = shared_cluster().create_database(&format!("lab{}", databases.len()));
    databases.insert(data_dir.to_path_buf(), url.clone());
    Some(url)
}

/// The test process's cluster, started on first use.
pub(crate) fn shared_cluster() -> &'static Postgres {
    static CLUSTER: OnceLock<Postgres> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        extern "C" fn stop_shared_cluster() {
            if let Some(cluster) = CLUSTER.get() {
                cluster.stop_in("immediate");
                let _ = std::fs::remove_dir_all(cluster._temp.path());
            }
        }
        let cluster = Postgres::start();
        // Statics are never dropped: the cluster is stopped as the process exits.
        // SAFETY: registers a function without arguments that lives as long as the program.
        unsafe { libc::atexit(stop_shared_cluster) };
        cluster
    })
}

/// The directory of `initdb` and `pg_ctl`: Debian keeps them under
/// /usr/lib/postgresql/<version>/bin, off the PATH; the newest version wins.
fn server_programs() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let on_path = std::env::var_os("PATH")?;
    std::env::split_paths(&on_path)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

/// Hands `dir` to the service user, who must be able to create the cluster in it.
fn give_to_service_user(dir: &Path) {
    let status = Command::new("chown")
        .arg(format!("{SERVICE_USER}:"))
        .arg(dir)
        .status()
        .expect("chown");
    assert!(
        status.success(),
        "cannot give {} to {SERVICE_USER}",
        dir.display()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
