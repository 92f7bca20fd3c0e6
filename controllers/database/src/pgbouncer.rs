//! pgbouncer's two files, `pgbouncer.ini` and `userlist.txt`, rendered by pure functions.
//!
//! The operator and the real-component test (`e2e/tests/pool_real.rs`) call the same renderers. The
//! only values a test may change are gathered in [`Endpoints`] — where pgbouncer listens, where it finds
//! PostgreSQL, and the path of its userlist — so what runs on loopback is the cluster's configuration
//! with addresses swapped, not a second configuration.

use berth_api::{PoolMode, PoolSpec};
use sha2::{Digest, Sha256};

use crate::credentials::Credentials;
use crate::names;

/// The addresses and paths that differ between a pod and a test on loopback; nothing else does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// pgbouncer's `listen_addr`.
    pub listen_addr: String,
    /// pgbouncer's `listen_port`.
    pub listen_port: u16,
    /// Host of PostgreSQL in the `[databases]` entry.
    pub server_host: String,
    /// Port of PostgreSQL in the `[databases]` entry.
    pub server_port: u16,
    /// pgbouncer's `auth_file`: where `userlist.txt` is found.
    pub auth_file: String,
    /// Where pgbouncer finds its certificate, key and the CA (`tls.crt`, `tls.key`, `ca.crt`).
    pub tls_dir: String,
}

impl Endpoints {
    /// In a pool pod: every address on port 5432, PostgreSQL behind its headless Service, the userlist
    /// where the Deployment mounts it.
    #[must_use]
    pub fn in_cluster(database: &str, namespace: &str) -> Self {
        Self {
            listen_addr: "*".to_owned(),
            listen_port: names::PORT,
            server_host: names::service_host(&names::server(database), namespace),
            server_port: names::PORT,
            auth_file: format!("{}/{}", names::POOL_AUTH_DIR, names::USERLIST_KEY),
            tls_dir: names::POOL_TLS_DIR.to_owned(),
        }
    }

    /// On this machine: pgbouncer and PostgreSQL on 127.0.0.1, the userlist at `auth_file`, the
    /// certificates in `tls_dir`.
    #[must_use]
    pub fn loopback(
        listen_port: u16,
        server_port: u16,
        auth_file: impl Into<String>,
        tls_dir: impl Into<String>,
    ) -> Self {
        Self {
            listen_addr: "127.0.0.1".to_owned(),
            listen_port,
            server_host: "127.0.0.1".to_owned(),
            server_port,
            auth_file: auth_file.into(),
            tls_dir: tls_dir.into(),
        }
    }
}

/// Everything `pgbouncer.ini` says. Only [`Endpoints`] is public to change; the rest follows from the
/// Database's spec and credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    database: String,
    mode: PoolMode,
    default_pool_size: i32,
    max_client_conn: i32,
    stats_user: String,
    pub endpoints: Endpoints,
}

impl PoolConfig {
    /// The pool configuration of a Database: its pool settings, its database, and its app role, which
    /// may read the pool's statistics on the `pgbouncer` console (`SHOW POOLS`, `SHOW STATS`, …).
    #[must_use]
    pub fn new(pool: &PoolSpec, credentials: &Credentials, endpoints: Endpoints) -> Self {
        Self {
            database: credentials.database.clone(),
            mode: pool.mode,
            default_pool_size: pool.default_pool_size,
            max_client_conn: pool.max_client_connections,
            stats_user: credentials.app_user.clone(),
            endpoints,
        }
    }

    /// The same configuration with other endpoints (see [`Endpoints::loopback`]).
    #[must_use]
    pub fn with_endpoints(self, endpoints: Endpoints) -> Self {
        Self { endpoints, ..self }
    }
}

/// `pgbouncer.ini`.
///
/// SCRAM everywhere: clients authenticate to pgbouncer with `scram-sha-256` against the userlist, and
/// pgbouncer logs in to PostgreSQL the same way with the password it finds there. No unix socket, log
/// file or pid file is written, so the container's root filesystem stays read-only.
///
/// TLS on both sides, with the Database's own certificates (see `tls`). Clients must use it
/// (`client_tls_sslmode = require`; libpq's default `prefer` does). pgbouncer checks that PostgreSQL's
/// certificate is signed by the Database's CA and names the host it dials (`verify-full`), and logs in
/// with its own certificate, whose common name is the app role: PostgreSQL authenticates the pool by
/// certificate, not by password, so a rotated password only has to reach the pool and the apps.
///
/// `client_tls_ca_file` verifies nobody under `require`, but pgbouncer loads a CA for its client side
/// whenever TLS is on, and without one it opens the system bundle, which the pool's image does not have
/// (pgbouncer then stops with `failed to load CA: (null)`). The Database's own CA is always there.
///
/// The admin console has no admin (`admin_users` empty): nobody can `PAUSE`, `RELOAD`, `KILL` or
/// `SHUTDOWN` the pool through it; pgbouncer is steered by its pod (signals, a new config). The app
/// role may only read statistics (`stats_users`).
#[must_use]
pub fn render_ini(cfg: &PoolConfig) -> String {
    let e = &cfg.endpoints;
    format!(
        "\
;; Rendered by berth; changes are overwritten.
[databases]
{db} = host={host} port={port} dbname={db}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {listen_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth_file}
admin_users =
stats_users = {stats}
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = {max_client}
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = require
client_tls_cert_file = {tls}/{cert}
client_tls_key_file = {tls}/{key}
client_tls_ca_file = {tls}/{ca}
server_tls_sslmode = verify-full
server_tls_ca_file = {tls}/{ca}
server_tls_cert_file = {tls}/{cert}
server_tls_key_file = {tls}/{key}
",
        db = cfg.database,
        host = e.server_host,
        port = e.server_port,
        listen_addr = e.listen_addr,
        listen_port = e.listen_port,
        auth_file = e.auth_file,
        stats = cfg.stats_user,
        mode = cfg.mode.as_str(),
        pool_size = cfg.default_pool_size,
        max_client = cfg.max_client_conn,
        tls = e.tls_dir,
        cert = crate::tls::CERT_FILE,
        key = crate::tls::KEY_FILE,
        ca = crate::tls::CA_FILE,
    )
}

/// `userlist.txt`: the app role and its password in plain text, which pgbouncer needs to log in to
/// PostgreSQL with SCRAM on the client's behalf. It lives in a Secret. The app role only: the pool is
/// the tenant's door, so it never holds the superuser's password, and the superuser cannot log in
/// through it.
#[must_use]
pub fn render_userlist(credentials: &Credentials) -> String {
    format!(
        "{} {}\n",
        quote(&credentials.app_user),
        quote(&credentials.app_password)
    )
}

/// pgbouncer's quoting: in double quotes, a double quote doubled.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The pool container's PID 1, run by `sh -c` with `$1` the ini and `$2` the userlist: runs
/// `pgbouncer "$1"`, answers SIGTERM (and SIGINT) with SIGINT, pgbouncer's safe shutdown in
/// every version (it waits until the servers are released, i.e. the transactions in flight end), and sends
/// SIGHUP, pgbouncer's reload, when the userlist (`$2`) changes. SIGTERM itself is no signal to pass on:
/// before pgbouncer 1.23 it stops at once, from 1.23 on it waits for every client to disconnect.
///
/// The reload is how a rotated password reaches the pool without a restart: the kubelet updates the
/// mounted Secret in place, pgbouncer reads the new userlist, and every open client session stays. The
/// file is compared by checksum every two seconds (`md5sum`: the image's busybox has no `cksum`); `sleep`
/// runs in the background so the TERM trap is not held up by it.
pub const SUPERVISOR: &str = r#"pgbouncer "$1" & pid=$!
trap 'kill -INT "$pid"' TERM INT
seen=$(md5sum <"$2")
while kill -0 "$pid" 2>/dev/null; do
    sleep 2 & wait $!
    now=$(md5sum <"$2") || continue
    if [ "$now" != "$seen" ]; then seen=$now; kill -HUP "$pid"; fi
done
wait "$pid"; exit $?"#;

/// The first 16 hex digits of SHA-256 over `pgbouncer.ini` and the pool's certificate: put on the pod
/// template, it rolls the pool when either changes, and only then. The userlist is not in it: pgbouncer
/// reloads that in place (see the pool's supervisor), so a rotated password ends no session.
#[must_use]
pub fn config_hash(ini: &str, cert: &str) -> String {
    let mut h = Sha256::new();
    h.update(ini.as_bytes());
    h.update([0]);
    h.update(cert.as_bytes());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            superuser: "su".into(),
            superuser_password: "Sup3r".into(),
            database: "shop".into(),
            app_user: "web".into(),
            app_password: "W3b\"pw".into(),
            rotation: 0,
        }
    }

    fn pool(mode: PoolMode, size: i32, max: i32) -> PoolSpec {
        PoolSpec {
            mode,
            default_pool_size: size,
            max_client_connections: max,
            replicas: 3,
        }
    }

    fn ini_lines(ini: &str) -> std::collections::BTreeMap<&str, &str> {
        ini.lines().filter_map(|l| l.split_once(" = ")).collect()
    }

    #[test]
    fn ini_carries_pool_settings_and_cluster_endpoints() {
        let cfg = PoolConfig::new(
            &pool(PoolMode::Statement, 7, 70),
            &creds(),
            Endpoints::in_cluster("shop-db", "t-1"),
        );
        let ini = render_ini(&cfg);
        let kv = ini_lines(&ini);
        assert_eq!(kv["shop"], "host=shop-db-postgres.t-1.svc port=5432 dbname=shop");
        assert_eq!(kv["listen_addr"], "*");
        assert_eq!(kv["listen_port"], "5432");
        assert_eq!(kv["auth_type"], "scram-sha-256");
        assert_eq!(kv["auth_file"], "/etc/pgbouncer/auth/userlist.txt");
        assert!(ini.contains("\nadmin_users =\n"), "no admin on the console");
        assert_eq!(kv["stats_users"], "web");
        assert_eq!(kv["pool_mode"], "statement");
        assert_eq!(kv["default_pool_size"], "7");
        assert_eq!(kv["max_client_conn"], "70");
        assert!(
            ini.contains("\nunix_socket_dir =\n"),
            "no socket on a read-only root filesystem"
        );
        assert!(ini.find("[databases]") < ini.find("[pgbouncer]"));
        assert_eq!(kv["client_tls_sslmode"], "require");
        assert_eq!(kv["client_tls_cert_file"], "/etc/pgbouncer/tls/tls.crt");
        assert_eq!(kv["client_tls_ca_file"], "/etc/pgbouncer/tls/ca.crt");
        assert_eq!(kv["server_tls_sslmode"], "verify-full");
        assert_eq!(kv["server_tls_ca_file"], "/etc/pgbouncer/tls/ca.crt");
        assert_eq!(kv["server_tls_key_file"], "/etc/pgbouncer/tls/tls.key");
    }

    #[test]
    fn loopback_changes_only_addresses_ports_and_paths() {
        let cluster = PoolConfig::new(
            &pool(PoolMode::Transaction, 2, 5),
            &creds(),
            Endpoints::in_cluster("d", "n"),
        );
        let local =
            cluster
                .clone()
                .with_endpoints(Endpoints::loopback(6432, 5433, "/tmp/x/userlist.txt", "/tmp/x"));
        let (a, b) = (render_ini(&cluster), render_ini(&local));
        let changed: Vec<&str> = ini_lines(&a)
            .into_iter()
            .filter(|(k, v)| ini_lines(&b).get(k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            changed,
            [
                "auth_file",
                "client_tls_ca_file",
                "client_tls_cert_file",
                "client_tls_key_file",
                "listen_addr",
                "listen_port",
                "server_tls_ca_file",
                "server_tls_cert_file",
                "server_tls_key_file",
                "shop"
            ]
        );
        assert_eq!(a.lines().count(), b.lines().count());
        assert_eq!(ini_lines(&b)["shop"], "host=127.0.0.1 port=5433 dbname=shop");
    }

    #[test]
    fn userlist_holds_the_app_role_only_quoted() {
        assert_eq!(render_userlist(&creds()), "\"web\" \"W3b\"\"pw\"\n");
    }

    #[test]
    fn hash_is_short_hex_and_follows_content() {
        let h = config_hash("a", "b");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, config_hash("a", "b"));
        assert_ne!(h, config_hash("a", "c"));
        assert_ne!(
            config_hash("ab", ""),
            config_hash("a", "b"),
            "the files are hashed apart"
        );
    }
}
