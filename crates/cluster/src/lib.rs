//! The embedded Postgres: a cluster under `COPYDESK_HOME` run from the machine's own
//! `initdb`/`pg_ctl`/`postgres` binaries, so `copydesk demo` needs no set-up, and each
//! test binary of every crate gets a cluster of its own. A crate of its own so the
//! engine's tests use it without depending on the application. Its statements are
//! plain sqlx: the cluster is never behind a pooler.
//!
//! * It listens on a Unix socket only, in a folder only its owner can open, so trust
//!   authentication admits nobody but the local user (and root).
//! * Postgres refuses to run as root: when copydesk runs as root, the server runs as the
//!   `postgres` user (Debian's package creates it) and owns the cluster folders. That
//!   user must be able to reach them: when `COPYDESK_HOME` sits under a folder it cannot
//!   enter (root's home is mode 0700, and so is a `mktemp -d` folder), the server's
//!   files (data, socket, log) live under the `postgres` user's own home instead, in a
//!   folder named after `COPYDESK_HOME` (`copydesk/<hash>`), and the demo says where.
//!   The locks stay in `COPYDESK_HOME`.
//! * Every copydesk process using the cluster holds a shared `flock` on
//!   `users.lock`; the last one to let go stops the server (under `init.lock`, which
//!   also serialises initialising and starting). A second command run while
//!   a worker is up therefore reuses the running cluster and leaves it running.

use std::{
    fs::{self, File},
    io::Read,
    os::unix::{fs::PermissionsExt, io::AsRawFd, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

/// The superuser and default database of an embedded cluster.
pub const SUPERUSER: &str = "copydesk";
/// The port number (it only names the socket file: nothing listens on TCP).
pub const PORT: u16 = 5432;

/// Why the embedded cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Postgres server binaries (initdb, pg_ctl, postgres) were found on PATH or in \
         /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
         Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`), or set \
         DATABASE_URL to use an existing server"
    )]
    NoBinaries,
    #[error(
        "copydesk runs as root and Postgres refuses to: the embedded server runs as the \
         `postgres` user, which does not exist here. Install Postgres with your package \
         manager (it creates the user), or run copydesk as an ordinary user, or set DATABASE_URL"
    )]
    NoServerUser,
    #[error(
        "the embedded Postgres socket path {0} is longer than Unix sockets allow (103 bytes): set COPYDESK_HOME to a shorter path"
    )]
    SocketPathTooLong(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(
        "the `postgres` user, which runs the embedded server when copydesk runs as root, cannot \
         reach {home} nor {fallback}: {why}. Set COPYDESK_HOME to a folder every user can enter \
         (e.g. under /var/tmp), or set DATABASE_URL to use a server you run"
    )]
    Unreachable {
        home: PathBuf,
        fallback: PathBuf,
        why: String,
    },
    #[error("embedded Postgres at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedded Postgres: {0}")]
    Sql(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to set up a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turn off fsync and full-page writes: for throwaway clusters (tests) only.
    pub unsafe_no_sync: bool,
}

/// A running embedded cluster, used by this process.
#[derive(Debug)]
pub struct Cluster {
    /// Where the server's files live: `home`, or a folder the server user can reach.
    dir: PathBuf,
    /// Why `dir` is not `home`, when it is not.
    relocated: Option<String>,
    data: PathBuf,
    socket_dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    users: Option<File>,
    init: Option<File>,
}

impl Cluster {
    /// Initialises the cluster under `home` if needed, starts it if it is not running,
    /// and registers this process as one of its users.
    pub fn ensure(home: &Path, opts: Options) -> Result<Self> {
        let bin = find_bin_dir().ok_or(Error::NoBinaries)?;
        fs::create_dir_all(home).map_err(io(home))?;
        let home = home.canonicalize().map_err(io(home))?;
        let run_as = server_user()?;
        let (dir, relocated) = match &run_as {
            Some(user) => server_dir(&home, &bin, user)?,
            None => (home.clone(), None),
        };
        let data = dir.join("pgdata");
        let socket_dir = dir.join("run");
        if socket_dir
            .join(format!(".s.PGSQL.{PORT}"))
            .as_os_str()
            .len()
            > 103
        {
            return Err(Error::SocketPathTooLong(socket_dir));
        }
        let run_as = run_as.map(|u| (u.uid, u.gid));

        // `init.lock` (exclusive) serialises starting and stopping; `users.lock` is held
        // shared by every process using the cluster, for as long as it uses it.
        let init = open_lock(&home.join("init.lock"))?;
        let users = open_lock(&home.join("users.lock"))?;
        flock(&init, libc::LOCK_EX).map_err(io(&home))?;
        let mut cluster = Self {
            dir,
            relocated,
            data,
            socket_dir,
            bin,
            run_as,
            users: None,
            init: None,
        };
        let prepared = cluster.prepare(&opts);
        if prepared.is_ok() {
            flock(&users, libc::LOCK_SH).map_err(io(&home))?;
            cluster.users = Some(users);
        }
        let _ = flock(&init, libc::LOCK_UN);
        cluster.init = Some(init);
        prepared?;
        Ok(cluster)
    }

    fn prepare(&self, opts: &Options) -> Result<()> {
        for dir in [&self.dir, &self.socket_dir] {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        fs::set_permissions(&self.socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(io(&self.socket_dir))?;
        if let Some((uid, gid)) = self.run_as {
            for dir in [&self.dir, &self.socket_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io(dir))?;
            }
        }
        if !self.data.join("PG_VERSION").exists() {
            self.initdb(opts)?;
        }
        self.write_settings(opts)?;
        if !self.is_running() {
            self.start()?;
        }
        Ok(())
    }

    fn initdb(&self, opts: &Options) -> Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if opts.unsafe_no_sync {
            cmd.arg("--no-sync");
        }
        self.run(cmd, "initdb").map_err(|e| match e {
            Error::Command { what, detail } => Error::Command {
                what,
                detail: format!(
                    "{detail}\nwhat to do: check that {} is writable{} and its disk has room; \
                     if an earlier failed start left {} half made, remove it and try again; \
                     or set COPYDESK_HOME to another folder, or DATABASE_URL to use a server you run",
                    self.dir.display(),
                    if self.run_as.is_some() { " by the postgres user" } else { "" },
                    self.data.display()
                ),
            },
            other => other,
        })?;
        let conf = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(io(&conf))?;
        text.push_str("\n# Settings written by copydesk on every start.\ninclude_if_exists = 'copydesk.conf'\n");
        fs::write(&conf, text).map_err(io(&conf))?;
        Ok(())
    }

    fn write_settings(&self, opts: &Options) -> Result<()> {
        let mut text = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = {PORT}\n\
             max_connections = 300\nshared_buffers = '256MB'\n\
             # The jobs table churns (three row versions per job): look for vacuum\n\
             # work every 5 s, not every minute (PERFORMANCE.md, churn line).\n\
             autovacuum_naptime = '5s'\n",
            self.socket_dir.display()
        );
        if opts.unsafe_no_sync {
            text.push_str("fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n");
        }
        let path = self.data.join("copydesk.conf");
        fs::write(&path, text).map_err(io(&path))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io(&path))?;
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    fn start(&self) -> Result<()> {
        let log = self.dir.join("postgres.log");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log);
        self.run(cmd, "pg_ctl start").map_err(|e| match e {
            Error::Command { what, detail } => Error::Command {
                what,
                detail: format!(
                    "{detail}\nlast lines of {}:\n{}\nwhat to do: the log above says why the server \
                     did not start (a stale postmaster.pid after a crash can be removed once no \
                     postgres process uses {}); or set COPYDESK_HOME to start a fresh cluster \
                     elsewhere, or DATABASE_URL to use a server you run",
                    log.display(),
                    tail(&log),
                    self.data.display()
                ),
            },
            other => other,
        })
    }

    /// Stops the server now, whoever else uses it (tests call this at exit).
    pub fn stop(&self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .args(["-m", "fast", "-w", "-D"])
            .arg(&self.data);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let _ = cmd.status();
    }

    /// Restarts the server at once, dropping every connection (tests of reconnection).
    pub fn restart_immediately(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .args(["-m", "immediate", "-w", "-D"])
            .arg(&self.data);
        self.run(cmd, "pg_ctl stop")?;
        self.start()
    }

    /// Where the server's data lives.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Why the server's files are not under `COPYDESK_HOME`, when they are not.
    pub fn relocated(&self) -> Option<&str> {
        self.relocated.as_deref()
    }

    /// Connection options for one database of the cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgresql://` URL for psql and other tools.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{database}?host={}&port={PORT}",
            self.socket_dir.display()
        )
    }

    /// Creates `name` (from `template`, when given) unless it exists.
    pub async fn create_database_from(&self, name: &str, template: Option<&str>) -> Result<()> {
        let mut conn = self.connect_options("postgres").connect().await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            let mut sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            if let Some(t) = template {
                sql.push_str(&format!(" TEMPLATE \"{}\"", t.replace('"', "\"\"")));
            }
            let res = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
            // Another process may have created it between our check and our CREATE.
            if let Err(e) = res {
                let dup = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "42P04" || c == "23505");
                if !dup {
                    return Err(e.into());
                }
            }
        }
        conn.close().await?;
        Ok(())
    }

    /// Creates the database `name` unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.create_database_from(name, None).await
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            cmd.env_remove("HOME");
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Command {
                what: what.to_owned(),
                detail: format!(
                    "could not run {} in {}{}: {e}",
                    cmd.get_program().to_string_lossy(),
                    self.dir.display(),
                    if self.run_as.is_some() {
                        " as the postgres user"
                    } else {
                        ""
                    }
                ),
            })?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .trim()
        .to_owned();
        if self.run_as.is_some() {
            detail.push_str(&format!(
                "\n(the server runs as the `postgres` user, which must be able to reach {}: \
                 every folder above it must be searchable by that user; set COPYDESK_HOME to move it)",
                self.dir.display()
            ));
        }
        Err(Error::Command {
            what: what.to_owned(),
            detail,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (Some(users), Some(init)) = (self.users.take(), self.init.take()) else {
            return;
        };
        // Hold off starters while we decide, then: last user out stops the server;
        // if anyone else still uses it, leave it running.
        let _ = flock(&init, libc::LOCK_EX);
        let _ = flock(&users, libc::LOCK_UN);
        if flock(&users, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            self.stop();
            let _ = flock(&users, libc::LOCK_UN);
        }
        let _ = flock(&init, libc::LOCK_UN);
    }
}

fn open_lock(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The unprivileged user the server runs as when we are root.
struct ServerUser {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn server_user() -> Result<Option<ServerUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some(ServerUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        })),
        _ => Err(Error::NoServerUser),
    }
}

/// Whether `user` can enter `dir` (every folder above it searchable): asked of the
/// system itself, by starting the server binary there as that user.
fn reachable(dir: &Path, bin: &Path, user: &ServerUser) -> std::io::Result<()> {
    let out = Command::new(bin.join("postgres"))
        .arg("--version")
        .current_dir(dir)
        .uid(user.uid)
        .gid(user.gid)
        .env_remove("HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match out? {
        s if s.success() => Ok(()),
        s => Err(std::io::Error::other(format!(
            "postgres --version exited with {s}"
        ))),
    }
}

/// Where the server's files live when it runs as `user`: `home` when that user can
/// reach it, else a folder of its own named after `home` under that user's home (or
/// /var/tmp), with the reason.
fn server_dir(home: &Path, bin: &Path, user: &ServerUser) -> Result<(PathBuf, Option<String>)> {
    let why = match reachable(home, bin, user) {
        Ok(()) => return Ok((home.to_owned(), None)),
        Err(why) => why,
    };
    use sha2::Digest;
    let hash = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let base = if user.home.is_dir() {
        user.home.join("copydesk")
    } else {
        PathBuf::from("/var/tmp/copydesk")
    };
    let dir = base.join(name);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    for d in [&base, &dir] {
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).map_err(io(d))?;
    }
    reachable(&dir, bin, user).map_err(|e| Error::Unreachable {
        home: home.to_owned(),
        fallback: dir.clone(),
        why: e.to_string(),
    })?;
    let note = format!(
        "the postgres user cannot reach {} ({why}), so the cluster's files live in {} instead",
        home.display(),
        dir.display()
    );
    Ok((dir, Some(note)))
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("COPYDESK_PG_BIN").map(PathBuf::from) {
        return has_all(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                // Resolve symlinks so we run the real installation's binaries together.
                let real = fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Some(real.filter(|d| has_all(d)).unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, d)| d)
        .or_else(|| Some(PathBuf::from("/usr/local/pgsql/bin")).filter(|d| has_all(d)))
}

fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Tests' clusters: one per test binary, started on first use in a temporary folder,
/// with a template database made once, and stopped (its folder removed) at exit.
pub mod testing {
    use std::{future::Future, path::PathBuf, pin::Pin, sync::OnceLock};

    use sqlx::postgres::PgConnectOptions;

    use super::{Cluster, Options};

    struct Shared {
        cluster: Cluster,
        dir: PathBuf,
    }

    static SHARED: OnceLock<Shared> = OnceLock::new();

    extern "C" fn stop() {
        if let Some(s) = SHARED.get() {
            s.cluster.stop();
            let _ = std::fs::remove_dir_all(&s.dir);
        }
    }

    /// What makes the template: given a connection to it, migrates it (and whatever
    /// else every test's database starts with).
    pub type Prepare = fn(PgConnectOptions) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// The test binary's cluster; the first call starts it and creates `template` with
    /// `prepare` (later calls' arguments are not used).
    pub fn cluster(template: &str, prepare: Prepare) -> &'static Cluster {
        &SHARED
            .get_or_init(|| {
                let template = template.to_owned();
                // A plain thread: the caller may be inside a tokio runtime.
                std::thread::spawn(move || {
                    // Under /tmp, not $TMPDIR: the socket's path must stay short.
                    let dir = PathBuf::from("/tmp").join(format!(
                        "cdt{}-{:x}",
                        std::process::id(),
                        rand_suffix()
                    ));
                    std::fs::create_dir_all(&dir).expect("test cluster folder");
                    let cluster = Cluster::ensure(
                        &dir,
                        Options {
                            unsafe_no_sync: true,
                        },
                    )
                    .expect("test cluster starts");
                    // SAFETY: registering a plain extern "C" function with no state.
                    unsafe { libc::atexit(stop) };
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the template");
                    rt.block_on(async {
                        cluster
                            .create_database(&template)
                            .await
                            .expect("template database");
                        prepare(cluster.connect_options(&template)).await;
                    });
                    Shared { cluster, dir }
                })
                .join()
                .expect("cluster set-up thread")
            })
            .cluster
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    }
}
