//! Real components, no cluster (DESIGN.md, testing ladder step 2): the `pgbouncer.ini` and
//! `userlist.txt` the Database controller renders run in a real pgbouncer in front of a real PostgreSQL
//! on loopback, bootstrapped by the controller's own script and started with its pod's command. Only
//! what `Endpoints::loopback` substitutes (listen address and port, the server's host and port, the
//! userlist and certificate paths) differs from what a pod gets, and the server's certificate also names
//! 127.0.0.1, the host pgbouncer dials here. pgbouncer runs under the pool container's own supervisor.
//!
//! Both hops are TLS: clients check the pool's certificate against the Database's CA, pgbouncer checks
//! PostgreSQL's (`verify-full`) and logs in with its own certificate. A rotated password reaches the
//! pool by a reload, and an open session never notices.
//!
//! Needs PostgreSQL's server binaries and pgbouncer (Debian: `apt-get install -y postgresql pgbouncer`).
//! Without them the test is skipped with a message, except under `CI`, where it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod real;

use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_api::{Database, PoolMode};
use berth_database::tls::{Subjects, Tls};
use berth_database::{Credentials, Endpoints, PoolConfig, names, render_ini, render_userlist};
use real::{
    Binaries, Process, RunAs, STARTUP, Volume, bootstrap, connect_local, connect_plain, connect_tls,
    ensure_bootstrapped, free_port, install_tls, path_str, rows, start_server, values, wait_for_connection,
    write_owned,
};
use tokio_postgres::SimpleQueryMessage;

const DATABASE: &str = r"
apiVersion: berth.dev/v1alpha1
kind: Database
metadata: {name: ledger, namespace: tenant-pool-real}
spec:
  storage: 1Gi
  pool: {mode: transaction, defaultPoolSize: 2, maxClientConnections: 5}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_pool_config_runs_in_real_pgbouncer_and_postgres() -> Result<()> {
    let Some(bin) = Binaries::find("pool_real")? else {
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
    let mut creds = Credentials::generate(names::SUPERUSER, &names::sql_database(name), names::APP_USER)?;
    // A password restored by hand may hold what the generator never writes: a double quote (doubled in
    // `userlist.txt`, pgbouncer's escape), a space, `;` and `#` (comment marks at a line's start), and
    // non-ASCII. The controller's read-back check lets it through, so pgbouncer must log in with it.
    creds.app_password.push_str("\" q\"\"; #ü");
    berth_database::readback::check(&creds).map_err(|e| anyhow::anyhow!("{e}"))?;

    let run_as = RunAs::detect()?;
    let dir = tempfile::Builder::new().prefix("berth-pool-real-").tempdir()?;
    run_as.own(dir.path())?;
    let (pg_port, pool_port) = (free_port()?, free_port()?);

    // PostgreSQL as its pod runs it: the bootstrap script (initdb, pg_hba.conf, roles and database),
    // then the server container's command.
    let volume = Volume::new(&run_as, dir.path())?;
    let mut subjects = Subjects::in_cluster(name, namespace);
    subjects.server.push("127.0.0.1".to_owned());
    let tls = Tls::generate(name, &subjects, &creds.app_user, time::OffsetDateTime::now_utc())
        .map_err(anyhow::Error::msg)?;
    install_tls(
        &run_as,
        &volume.tls,
        &tls.server_cert,
        &tls.server_key,
        &tls.ca_cert,
    )?;
    ensure_bootstrapped(&bootstrap(&bin, &run_as, &volume, &creds, &["sh"])?)?;
    let mut server = start_server(&bin, &run_as, &volume, pg_port, dir.path().join("postgres.log"))?;
    let admin = wait_for_connection(&mut server, STARTUP, || {
        connect_local(
            &volume.socket,
            pg_port,
            &creds.superuser,
            &creds.superuser_password,
            "postgres",
        )
    })
    .await?;

    // pgbouncer with the rendered files; only the endpoints are swapped for loopback.
    let userlist_path = dir.path().join(names::USERLIST_KEY);
    let pool_tls = dir.path().join("pool-tls");
    install_tls(&run_as, &pool_tls, &tls.pool_cert, &tls.pool_key, &tls.ca_cert)?;
    let cluster = PoolConfig::new(pool, &creds, Endpoints::in_cluster(name, namespace));
    let local = cluster.clone().with_endpoints(Endpoints::loopback(
        pool_port,
        pg_port,
        path_str(&userlist_path)?,
        path_str(&pool_tls)?,
    ));
    let (cluster_ini, ini) = (render_ini(&cluster), render_ini(&local));
    assert_eq!(
        changed_keys(&cluster_ini, &ini),
        [
            "auth_file",
            "client_tls_ca_file",
            "client_tls_cert_file",
            "client_tls_key_file",
            "ledger",
            "listen_addr",
            "listen_port",
            "server_tls_ca_file",
            "server_tls_cert_file",
            "server_tls_key_file"
        ]
    );
    let ini_path = dir.path().join(names::INI_KEY);
    write_owned(&run_as, &ini_path, &ini)?;
    write_owned(&run_as, &userlist_path, &render_userlist(&creds))?;
    let mut bouncer = start_pgbouncer(&bin, &run_as, dir.path(), &ini_path, &userlist_path)?;
    let pool_name = subjects.pool[0].clone();
    let as_app = |password: &str, dbname: &str| {
        let (password, dbname, pool_name, ca) = (
            password.to_owned(),
            dbname.to_owned(),
            pool_name.clone(),
            tls.ca_cert.clone(),
        );
        let user = creds.app_user.clone();
        async move { connect_tls(pool_port, &pool_name, &ca, &user, &password, &dbname).await }
    };
    let through_pool = || as_app(&creds.app_password, &creds.database);
    drop(wait_for_connection(&mut bouncer, STARTUP, through_pool).await?);

    // TLS on both hops: a client without it is refused; the server sees pgbouncer's connection encrypted
    // and authenticated by the pool's certificate.
    let plain = connect_plain(pool_port, &creds.app_user, &creds.app_password, &creds.database).await;
    assert!(plain.is_err(), "the pool served a client without TLS");
    let hop = values(
        &through_pool().await?,
        "SELECT ssl::text, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await?;
    assert_eq!(hop, ["true", format!("/CN={}", creds.app_user).as_str()]);

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

    // The console: the app role reads statistics (stats_users) but administers nothing (no
    // admin_users); the superuser, absent from the userlist, gets no further than the login.
    drop(clients);
    let console = wait_for_connection(&mut bouncer, Duration::from_secs(10), || {
        as_app(&creds.app_password, "pgbouncer")
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
    for admin_command in ["PAUSE", "RELOAD", "SHUTDOWN"] {
        assert!(
            console.simple_query(admin_command).await.is_err(),
            "the app role ran {admin_command} on pgbouncer's console"
        );
    }
    for dbname in ["pgbouncer", creds.database.as_str()] {
        let superuser = connect_tls(
            pool_port,
            &pool_name,
            &tls.ca_cert,
            &creds.superuser,
            &creds.superuser_password,
            dbname,
        )
        .await;
        assert!(
            superuser.is_err(),
            "the superuser logged in to {dbname} through the pool"
        );
    }

    // Rotation: the userlist is replaced as the kubelet replaces a mounted Secret (a new file renamed
    // over the old); the supervisor sees it and pgbouncer reloads. The session opened before goes on,
    // the new password gets in, the old one no longer does.
    let held = through_pool().await?;
    let rotated = creds.clone().rotate(1)?;
    let next = dir.path().join("userlist.next");
    write_owned(&run_as, &next, &render_userlist(&rotated))?;
    std::fs::rename(&next, &userlist_path)?;
    drop(
        wait_for_connection(&mut bouncer, Duration::from_secs(30), || {
            as_app(&rotated.app_password, &creds.database)
        })
        .await?,
    );
    assert_eq!(values(&held, "SELECT 1").await?, ["1"], "the open session broke");
    assert!(
        as_app(&creds.app_password, &creds.database).await.is_err(),
        "the old password still gets in after the reload"
    );
    bouncer.alive()?;
    drop(held);
    drop(bouncer);
    drop(server);
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

/// pgbouncer under the pool container's supervisor (`sh -c SUPERVISOR pgbouncer INI USERLIST`).
fn start_pgbouncer(
    bin: &Binaries,
    run_as: &RunAs,
    dir: &std::path::Path,
    ini: &std::path::Path,
    userlist: &std::path::Path,
) -> Result<Process> {
    let pgbouncer_dir = bin.pgbouncer.parent().context("pgbouncer's directory")?;
    let path = format!(
        "{}:{}",
        pgbouncer_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = run_as.command("sh");
    command
        .args(["-c", berth_database::pgbouncer::SUPERVISOR, "pgbouncer"])
        .arg(ini)
        .arg(userlist)
        .env("PATH", path);
    Process::spawn("pgbouncer", command, dir.join("pgbouncer.log"))
}
