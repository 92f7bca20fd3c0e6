//! What the real-component tests (`pool_real`, `bootstrap_real`) share: PostgreSQL's binaries and
//! pgbouncer found on this machine, an unprivileged account to run them as, the server bootstrapped by
//! the very script the Database controller ships and started with the very command its pod runs, and
//! clients.

// Each test uses a part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use berth_database::Credentials;
use berth_database::postgres::{self, env};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const STARTUP: Duration = Duration::from_secs(60);

pub struct Binaries {
    pub pg_bin: PathBuf,
    pub pgbouncer: PathBuf,
}

impl Binaries {
    /// PostgreSQL's server binaries (`BERTH_PG_BINDIR`, Debian's newest `/usr/lib/postgresql/*/bin`,
    /// or `initdb` on `PATH`) and pgbouncer (`PATH`, `/usr/sbin`). `None` means skip `test`; under
    /// `CI` their absence is an error.
    pub fn find(test: &str) -> Result<Option<Self>> {
        let pg_bin = std::env::var_os("BERTH_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(debian_pg_bin)
            .or_else(|| on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)));
        let pg_bin = pg_bin.filter(|d| {
            ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| d.join(b).is_file())
        });
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
                        "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql)",
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
                eprintln!("SKIPPED {test}: {missing} not found; {hint} (under CI this fails)");
                Ok(None)
            }
        }
    }

    pub fn pg_bin_str(&self) -> Result<&str> {
        path_str(&self.pg_bin)
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
pub struct RunAs {
    ids: Option<(u32, u32)>,
    /// The account's name, which the bootstrap's peer authentication maps to the superuser.
    pub name: String,
}

impl RunAs {
    pub fn detect() -> Result<Self> {
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let fields = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(String, u32, u32)> {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                pred(&f).then(|| Some((f[0].to_owned(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
            })
        };
        let uid = std::fs::metadata("/proc/self")?.uid();
        if uid != 0 {
            let (name, _, _) = fields(&|f: &[&str]| f.get(2) == Some(&uid.to_string().as_str()))
                .context("this test's uid has no account in /etc/passwd")?;
            return Ok(Self { ids: None, name });
        }
        let (name, uid, gid) = fields(&|f: &[&str]| f.first() == Some(&"postgres"))
            .or_else(|| fields(&|f: &[&str]| f.first() == Some(&"nobody")))
            .context("no postgres or nobody account to run as")?;
        Ok(Self {
            ids: Some((uid, gid)),
            name,
        })
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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

    pub fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    /// A directory owned by the account, private to it.
    pub fn private_dir(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        self.own(path)
    }
}

/// A PostgreSQL data directory below `dir`, set up as the pod's volume is: the volume's root (owned by
/// the server's account) with the data directory `pgdata` below it, and a private scratch directory
/// standing in for the init container's in-memory `/tmp`.
pub struct Volume {
    pub root: PathBuf,
    pub pgdata: PathBuf,
    pub scratch: PathBuf,
    pub socket: PathBuf,
    /// The server's certificate, key and CA (its `tls` volume; see [`install_tls`]).
    pub tls: PathBuf,
}

impl Volume {
    pub fn new(run_as: &RunAs, dir: &Path) -> Result<Self> {
        let v = Self {
            root: dir.join("volume"),
            pgdata: dir.join("volume").join("pgdata"),
            scratch: dir.join("scratch"),
            socket: dir.join("run"),
            tls: dir.join("server-tls"),
        };
        for d in [&v.root, &v.scratch, &v.socket] {
            run_as.private_dir(d)?;
        }
        Ok(v)
    }
}

/// What a run of the bootstrap script printed, and whether it succeeded.
pub struct Bootstrapped {
    pub success: bool,
    pub output: String,
}

/// Runs [`postgres::bootstrap_script`] with `shell` (`sh`, or `busybox sh`) as the init container
/// does: the credentials in the environment (and nowhere else), the binaries from `BERTH_PG_BIN`.
pub fn bootstrap(
    bin: &Binaries,
    run_as: &RunAs,
    volume: &Volume,
    creds: &Credentials,
    shell: &[&str],
) -> Result<Bootstrapped> {
    let (program, shell_args) = shell.split_first().context("a shell")?;
    let mut command = run_as.command(program);
    command
        .args(shell_args)
        .args(["-c", &postgres::bootstrap_script()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", &volume.scratch)
        .env(env::BIN_DIR, &bin.pg_bin)
        .env(env::PGDATA, &volume.pgdata)
        .env(env::OS_USER, &run_as.name)
        .env(env::SUPERUSER, &creds.superuser)
        .env(env::SUPERUSER_PASSWORD, &creds.superuser_password)
        .env(env::DATABASE, &creds.database)
        .env(env::APP_USER, &creds.app_user)
        .env(env::APP_PASSWORD, &creds.app_password)
        .stdin(Stdio::null());
    let out = command.output().context("running the bootstrap script")?;
    Ok(Bootstrapped {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The server container's command (`postgres::server_command`), with what differs on this machine
/// appended (later `-c` settings win): loopback instead of every address, a free port, a socket
/// directory of the test's own, no fsync.
pub fn start_server(
    bin: &Binaries,
    run_as: &RunAs,
    volume: &Volume,
    port: u16,
    log: PathBuf,
) -> Result<Process> {
    let command = postgres::server_command(
        bin.pg_bin_str()?,
        path_str(&volume.pgdata)?,
        path_str(&volume.tls)?,
    );
    let (program, args) = command.split_first().context("a command")?;
    let mut server = run_as.command(program);
    server.args(args).env_clear();
    for setting in [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("port={port}"),
        format!("unix_socket_directories={}", path_str(&volume.socket)?),
        "fsync=off".to_owned(),
        "max_connections=30".to_owned(),
    ] {
        server.args(["-c", &setting]);
    }
    Process::spawn("postgres", server, log)
}

/// A server process, stopped when dropped (SIGINT — PostgreSQL's fast shutdown — then SIGKILL after
/// ten seconds). Its output goes to a log file, printed when the test fails.
pub struct Process {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Result<Self> {
        let out = File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log when the process has already exited.
    pub fn alive(&mut self) -> Result<()> {
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

/// Over TCP without TLS: what the server and the pool refuse.
pub async fn connect_plain(
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(port, user, password, dbname)
        .host("127.0.0.1")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Over the server's socket, as the pod's probes and a `kubectl exec` would.
pub async fn connect_local(
    socket: &Path,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(port, user, password, dbname)
        .host_path(socket)
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Over TCP to 127.0.0.1 with TLS, checking that the certificate is signed by `ca` (PEM) and names
/// `server_name` — the Service name a pod dials (`sslmode=verify-full`).
pub async fn connect_tls(
    port: u16,
    server_name: &str,
    ca: &str,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(port, user, password, dbname)
        .host(server_name)
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect(tls_connector(ca))
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

fn config(port: u16, user: &str, password: &str, dbname: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    c
}

/// A TLS client that trusts `ca` (PEM) alone.
pub fn tls_connector(ca: &str) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(cert.expect("the CA is PEM"))
            .expect("the CA is a certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Writes one side's certificate, key and the CA into `dir` as its pod mounts them (`tls.crt`,
/// `tls.key`, `ca.crt`), owned by the account and private to it.
pub fn install_tls(run_as: &RunAs, dir: &Path, cert: &str, key: &str, ca: &str) -> Result<()> {
    use berth_database::tls::{CA_FILE, CERT_FILE, KEY_FILE};
    run_as.private_dir(dir)?;
    for (file, content) in [(CERT_FILE, cert), (KEY_FILE, key), (CA_FILE, ca)] {
        write_owned(run_as, &dir.join(file), content)?;
    }
    Ok(())
}

/// Retries `connect` until it succeeds, the process exits, or `within` passes.
pub async fn wait_for_connection<F, Fut>(
    process: &mut Process,
    within: Duration,
    connect: F,
) -> Result<Client>
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
pub async fn values(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(rows(client, sql).await?.into_iter().flatten().collect())
}

pub async fn rows(client: &Client, sql: &str) -> Result<Vec<Vec<String>>> {
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

pub fn write_owned(run_as: &RunAs, path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    run_as.own(path)
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Fails unless the bootstrap succeeded, and says what it printed.
pub fn ensure_bootstrapped(run: &Bootstrapped) -> Result<()> {
    ensure!(run.success, "the bootstrap script failed:\n{}", run.output);
    Ok(())
}
