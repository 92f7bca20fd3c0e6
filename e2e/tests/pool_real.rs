//! Real components, no cluster (DESIGN.md, testing ladder step 2): the `pgbouncer.ini` and
//! `userlist.txt` the Database controller renders, and its first-start script, run by a real pgbouncer
//! in front of a real PostgreSQL on loopback. Only what `Endpoints::loopback` substitutes (listen
//! address and port, the server's host and port, the userlist path) differs from what a pod gets.
//!
//! Needs PostgreSQL's server binaries and pgbouncer (Debian: `apt-get install -y postgresql pgbouncer`).
//! Without them the test is skipped with a message, except under `CI`, where it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use berth_api::{Database, PoolMode};
use berth_database::{Credentials, Endpoints, PoolConfig, names, postgres, render_ini, render_userlist};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const DATABASE: &str = r"
apiVersion: berth.dev/v1alpha1
kind: Database
metadata: {name: ledger, namespace: tenant-pool-real}
spec:
  storage: 1Gi
  pool: {mode: transaction, defaultPoolSize: 2, maxClientConnections: 5}
";

const STARTUP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_pool_config_runs_in_real_pgbouncer_and_postgres() -> Result<()> {
    let Some(bin) = Binaries::find()? else {
        return Ok(());
    };

    // The Database and its credentials, generated as the controller generates them.
    let db: Database = serde_yaml::from_str(DATABASE)?;
    let (name, namespace) = ("ledger", "tenant-pool-real");
    let pool = &db.spec.pool;
    assert_eq!(
        (pool.mode, pool.default_pool_size, pool.max_client_connections),
        (PoolMode::Transaction, 2, 5)
    );
    let creds = Credentials::generate(names::SUPERUSER, &names::sql_database(name), names::APP_USER)?;

    let run_as = RunAs::detect()?;
    let dir = tempfile::Builder::new().prefix("berth-pool-real-").tempdir()?;
    run_as.own(dir.path())?;
    let (pg_port, pool_port) = (free_port()?, free_port()?);

    // PostgreSQL, initialised as the image does: SCRAM for every connection, the superuser's password
    // from the credentials, the database POSTGRES_DB, then the controller's own init script.
    let mut server = start_postgres(&bin, &run_as, dir.path(), pg_port, &creds)?;
    let admin = wait_for_connection(&mut server, STARTUP, || {
        connect(pg_port, &creds.superuser, &creds.superuser_password, "postgres")
    })
    .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\"", creds.database))
        .await?;
    run_init_script(&bin, pg_port, &creds)?;

    // pgbouncer with the rendered files; only the endpoints are swapped for loopback.
    let userlist_path = dir.path().join(names::USERLIST_KEY);
    let cluster = PoolConfig::new(pool, &creds, Endpoints::in_cluster(name, namespace));
    let local =
        cluster
            .clone()
            .with_endpoints(Endpoints::loopback(pool_port, pg_port, path_str(&userlist_path)?));
    let (cluster_ini, ini) = (render_ini(&cluster), render_ini(&local));
    assert_eq!(
        changed_keys(&cluster_ini, &ini),
        ["auth_file", "ledger", "listen_addr", "listen_port"]
    );
    let ini_path = dir.path().join(names::INI_KEY);
    write_owned(&run_as, &ini_path, &ini)?;
    write_owned(&run_as, &userlist_path, &render_userlist(&creds))?;
    let mut bouncer = start_pgbouncer(&bin, &run_as, dir.path(), &ini_path)?;
    let through_pool = || connect(pool_port, &creds.app_user, &creds.app_password, &creds.database);
    drop(wait_for_connection(&mut bouncer, STARTUP, through_pool).await?);

    // Five clients (max_client_conn) through the pool: the app role owns its database and can use it.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(
            through_pool()
                .await
                .context("a client within max_client_conn was refused")?,
        );
    }
    let who = values(&clients[0], "SELECT current_user, current_database()").await?;
    assert_eq!(who, [creds.app_user.as_str(), creds.database.as_str()]);
    clients[0]
        .simple_query(
            "CREATE TABLE entries (id int PRIMARY KEY, amount numeric); INSERT INTO entries VALUES (1, 9.5)",
        )
        .await?;
    assert_eq!(
        values(&clients[1], "SELECT amount FROM entries WHERE id = 1").await?,
        ["9.5"]
    );

    // Transaction pooling with defaultPoolSize 2: all five clients stay connected and each runs
    // transactions concurrently; no more than two server connections serve them. (In session mode,
    // three of the five would wait for a server connection until the others disconnect.)
    let backends = tokio::time::timeout(Duration::from_secs(30), async {
        let runs = clients.iter().map(|c| async move {
            let mut pids = Vec::new();
            for _ in 0..4 {
                let sql = "BEGIN; SELECT pg_backend_pid() FROM pg_sleep(0.02); COMMIT";
                pids.extend(values(c, sql).await?);
            }
            anyhow::Ok(pids)
        });
        futures::future::try_join_all(runs).await
    })
    .await
    .context("clients starved: the pool does not release server connections per transaction")??;
    let distinct: std::collections::BTreeSet<String> = backends.into_iter().flatten().collect();
    assert!(
        (1..=2).contains(&distinct.len()),
        "server backends used: {distinct:?}"
    );
    let server_side = values(
        &admin,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
            creds.app_user
        ),
    )
    .await?;
    let server_side: usize = server_side[0].parse()?;
    assert!(server_side <= 2, "{server_side} server connections for 5 clients");

    // The sixth client is refused by pgbouncer itself.
    let refused = through_pool()
        .await
        .err()
        .context("a sixth client got in past max_client_conn = 5")?;
    let message = refused
        .as_db_error()
        .map_or_else(|| format!("{refused:?}"), |e| e.message().to_owned());
    assert!(
        message.contains("no more connections allowed (max_client_conn)"),
        "{message}"
    );

    // The admin console, for the superuser the ini names in admin_users (not for the app role).
    drop(clients);
    let console = wait_for_connection(&mut bouncer, Duration::from_secs(10), || {
        connect(
            pool_port,
            &creds.superuser,
            &creds.superuser_password,
            "pgbouncer",
        )
    })
    .await?;
    let config = rows(&console, "SHOW CONFIG").await?;
    let setting = |key: &str| config.iter().find(|r| r[0] == key).map(|r| r[1].clone());
    assert_eq!(setting("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(setting("max_client_conn").as_deref(), Some("5"));
    assert_eq!(setting("default_pool_size").as_deref(), Some("2"));
    assert_eq!(setting("auth_type").as_deref(), Some("scram-sha-256"));
    let pools = console.simple_query("SHOW POOLS").await?;
    let app_pool = pools.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get("user") == Some(creds.app_user.as_str()) => Some(r),
        _ => None,
    });
    let app_pool = app_pool.context("SHOW POOLS has no pool of the app role")?;
    assert_eq!(app_pool.get("database"), Some(creds.database.as_str()));
    assert_eq!(app_pool.get("pool_mode"), Some("transaction"));
    let app_on_console = connect(pool_port, &creds.app_user, &creds.app_password, "pgbouncer").await;
    let app_can_admin = match app_on_console {
        Ok(c) => c.simple_query("SHOW CONFIG").await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !app_can_admin,
        "the app role must not reach pgbouncer's admin console"
    );
    Ok(())
}

/// Keys whose values differ between two renderings (`key = value` lines).
fn changed_keys(a: &str, b: &str) -> Vec<String> {
    let kv = |s: &str| -> std::collections::BTreeMap<String, String> {
        s.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let (a, b) = (kv(a), kv(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same settings"
    );
    a.into_iter()
        .filter(|(k, v)| b.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// PostgreSQL and pgbouncer as child processes.

struct Binaries {
    pg_bin: PathBuf,
    pgbouncer: PathBuf,
}

impl Binaries {
    /// PostgreSQL's server binaries (`BERTH_PG_BINDIR`, Debian's newest `/usr/lib/postgresql/*/bin`,
    /// or `initdb` on `PATH`) and pgbouncer (`PATH`, `/usr/sbin`). `None` means skip; under `CI`
    /// their absence is an error.
    fn find() -> Result<Option<Self>> {
        let pg_bin = std::env::var_os("BERTH_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(debian_pg_bin)
            .or_else(|| on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)));
        let pg_bin = pg_bin.filter(|d| ["initdb", "postgres", "psql"].iter().all(|b| d.join(b).is_file()));
        let pgbouncer = on_path("pgbouncer").or_else(|| {
            ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
        match (pg_bin, pgbouncer) {
            (Some(pg_bin), Some(pgbouncer)) => Ok(Some(Self { pg_bin, pgbouncer })),
            (pg, pb) => {
                let missing = [
                    (
                        "PostgreSQL server binaries (initdb, postgres, psql)",
                        pg.is_none(),
                    ),
                    ("pgbouncer", pb.is_none()),
                ]
                .iter()
                .filter(|(_, absent)| *absent)
                .map(|(what, _)| *what)
                .collect::<Vec<_>>()
                .join(" and ");
                let hint = "install them with `apt-get install -y postgresql pgbouncer`";
                if in_ci() {
                    bail!("{missing} not found, and CI is set: {hint}");
                }
                eprintln!("SKIPPED pool_real: {missing} not found; {hint} (under CI this fails)");
                Ok(None)
            }
        }
    }

    fn pg(&self, name: &str) -> PathBuf {
        self.pg_bin.join(name)
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn debian_pg_bin() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// PostgreSQL and pgbouncer refuse to run as root. When this test runs as root, they run as the
/// `postgres` account (else `nobody`) through `setpriv`, which execs in place: the child's pid is the
/// server's, so stopping the child stops the server.
struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    fn detect() -> Result<Self> {
        if std::fs::metadata("/proc/self")?.uid() != 0 {
            return Ok(Self { ids: None });
        }
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let ids = |user: &str| {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&user))
                    .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
            })
        };
        let ids = ids("postgres")
            .or_else(|| ids("nobody"))
            .context("no postgres or nobody account to run as")?;
        Ok(Self { ids: Some(ids) })
    }

    fn command(&self, program: &Path) -> Command {
        match self.ids {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".to_owned(),
                    "--".to_owned(),
                ]);
                c.arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

/// A server process, stopped when dropped (SIGINT — PostgreSQL's fast shutdown — then SIGKILL after
/// ten seconds). Its output goes to a log file, printed when the test fails.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Result<Self> {
        let out = File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log when the process has already exited.
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn start_postgres(
    bin: &Binaries,
    run_as: &RunAs,
    dir: &Path,
    port: u16,
    creds: &Credentials,
) -> Result<Process> {
    let data = dir.join("data");
    let pwfile = dir.join("pwfile");
    write_owned(run_as, &pwfile, &creds.superuser_password)?;
    let init = run_as
        .command(&bin.pg("initdb"))
        .args(["--pgdata", path_str(&data)?, "--username", &creds.superuser])
        .arg(format!("--pwfile={}", path_str(&pwfile)?))
        .args([
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ])
        .output()?;
    ensure!(
        init.status.success(),
        "initdb failed:\n{}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );
    let mut server = run_as.command(&bin.pg("postgres"));
    server.args(["-D", path_str(&data)?]);
    for setting in [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("port={port}"),
        format!("unix_socket_directories={}", path_str(dir)?),
        "fsync=off".to_owned(),
        "max_connections=30".to_owned(),
    ] {
        server.args(["-c", &setting]);
    }
    Process::spawn("postgres", server, dir.join("postgres.log"))
}

/// The controller's first-start script, run as the image runs it but against a TCP server.
fn run_init_script(bin: &Binaries, port: u16, creds: &Credentials) -> Result<()> {
    let path = std::env::join_paths(std::iter::once(bin.pg_bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let out = Command::new("sh")
        .args(["-c", postgres::INIT_SCRIPT])
        .env("PATH", path)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGPASSWORD", &creds.superuser_password)
        .env("POSTGRES_USER", &creds.superuser)
        .env("POSTGRES_DB", &creds.database)
        .env("APP_USER", &creds.app_user)
        .env("APP_PASSWORD", &creds.app_password)
        .output()?;
    ensure!(
        out.status.success(),
        "init script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn start_pgbouncer(bin: &Binaries, run_as: &RunAs, dir: &Path, ini: &Path) -> Result<Process> {
    let mut command = run_as.command(&bin.pgbouncer);
    command.arg(ini);
    Process::spawn("pgbouncer", command, dir.join("pgbouncer.log"))
}

async fn connect(
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Retries `connect` until it succeeds, the process exits, or `within` passes.
async fn wait_for_connection<F, Fut>(process: &mut Process, within: Duration, connect: F) -> Result<Client>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Client, tokio_postgres::Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        match connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{} did not accept connections within {within:?}: {e:?}\n{}",
                    process.name,
                    process.log()
                )
            }
            Err(_) => {
                process.alive()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every value of every row of `sql` (simple protocol: pgbouncer pools by transaction, so no
/// named prepared statements).
async fn values(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(rows(client, sql).await?.into_iter().flatten().collect())
}

async fn rows(client: &Client, sql: &str) -> Result<Vec<Vec<String>>> {
    Ok(client
        .simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

fn write_owned(run_as: &RunAs, path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    run_as.own(path)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
