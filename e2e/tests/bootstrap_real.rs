//! Real components, no cluster (DESIGN.md, testing ladder step 2): the bootstrap script the Database
//! controller ships to the PostgreSQL pod's init container, run by `sh` against this machine's
//! PostgreSQL binaries as the pod runs it (credentials only in the environment, binaries from
//! `BERTH_PG_BIN`), then the server started with the pod's command. It must initialise an empty volume
//! once and never again, leave the roles' passwords as the credentials say, and print no password. Over
//! TCP the server takes TLS with a certificate of the Database's CA only (see `postgres::pg_hba`); the
//! passwords are checked over its socket.
//!
//! Needs PostgreSQL's server binaries and pgbouncer (Debian: `apt-get install -y postgresql pgbouncer`).
//! Without them the test is skipped with a message, except under `CI`, where it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod real;

use anyhow::{Result, ensure};
use berth_database::tls::{Subjects, Tls};
use berth_database::{Credentials, names, postgres};
use real::{
    Binaries, Bootstrapped, RunAs, STARTUP, Volume, bootstrap, connect_local, connect_plain, connect_tls,
    ensure_bootstrapped, free_port, install_tls, start_server, values, wait_for_connection,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_initialises_once_and_keeps_passwords_as_the_secret_says() -> Result<()> {
    let Some(bin) = Binaries::find("bootstrap_real")? else {
        return Ok(());
    };
    let creds = Credentials::generate(
        names::SUPERUSER,
        &names::sql_database("orders-db"),
        names::APP_USER,
    )?;
    let run_as = RunAs::detect()?;
    let dir = tempfile::Builder::new()
        .prefix("berth-bootstrap-real-")
        .tempdir()?;
    run_as.own(dir.path())?;
    let volume = Volume::new(&run_as, dir.path())?;
    let port = free_port()?;
    let tls = Tls::generate(
        "orders-db",
        &Subjects::in_cluster("orders-db", "tenant-bootstrap-real"),
        &creds.app_user,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(anyhow::Error::msg)?;
    install_tls(
        &run_as,
        &volume.tls,
        &tls.server_cert,
        &tls.server_key,
        &tls.ca_cert,
    )?;
    let local = |user: &str, password: &str, db: &str| {
        let (user, password, db) = (user.to_owned(), password.to_owned(), db.to_owned());
        let socket = volume.socket.clone();
        async move { connect_local(&socket, port, &user, &password, &db).await }
    };
    let log = || dir.path().join("postgres.log");
    let quiet = |run: &Bootstrapped| {
        for pw in [&creds.superuser_password, &creds.app_password] {
            assert!(
                !run.output.contains(pw.as_str()),
                "a password in the output:\n{}",
                run.output
            );
        }
    };

    // First start: an empty volume is initialised, and the app role owns its database.
    let first = bootstrap(&bin, &run_as, &volume, &creds, &["sh"])?;
    ensure_bootstrapped(&first)?;
    quiet(&first);
    ensure!(first.output.contains("initialising"), "{}", first.output);
    assert_eq!(
        std::fs::read_to_string(volume.pgdata.join("pg_hba.conf"))?,
        postgres::pg_hba()
    );
    let mut server = start_server(&bin, &run_as, &volume, port, log())?;
    let app = wait_for_connection(&mut server, STARTUP, || {
        local(&creds.app_user, &creds.app_password, &creds.database)
    })
    .await?;
    // Over TCP: no TLS, no entry; TLS with the password alone, no entry either (only the pool's
    // certificate logs in, see pool_real).
    assert!(
        connect_plain(port, &creds.app_user, &creds.app_password, &creds.database)
            .await
            .is_err(),
        "plain TCP let the app role in"
    );
    let server_name = &Subjects::in_cluster("orders-db", "tenant-bootstrap-real").server[0];
    let tls_only = connect_tls(
        port,
        server_name,
        &tls.ca_cert,
        &creds.app_user,
        &creds.app_password,
        &creds.database,
    )
    .await;
    let Err(refused) = tls_only else {
        panic!("TLS with a password but no certificate let the app role in");
    };
    assert!(format!("{refused:?}").contains("certificate"), "{refused:?}");
    let owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()";
    assert_eq!(values(&app, owner).await?, [creds.app_user.as_str()]);
    app.batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (42)")
        .await?;
    assert!(
        local(&creds.app_user, "not-the-password", &creds.database)
            .await
            .is_err(),
        "SCRAM, not trust"
    );
    let superuser = local(&creds.superuser, &creds.superuser_password, "postgres").await?;
    // Someone changes both passwords inside the server, away from the credentials Secret.
    superuser
        .batch_execute(&format!(
            "ALTER ROLE \"{}\" PASSWORD 'drifted-1'; ALTER ROLE \"{}\" PASSWORD 'drifted-2'",
            creds.app_user, creds.superuser
        ))
        .await?;
    drop((app, superuser));
    drop(server);

    // Second start (a restart, an upgrade), by busybox's sh where there is one, as in the test image:
    // no initdb, the rows are still there, and the passwords are the Secret's again.
    let busybox =
        std::path::Path::new("/bin/busybox").is_file() || std::path::Path::new("/usr/bin/busybox").is_file();
    let shell: &[&str] = if busybox { &["busybox", "sh"] } else { &["sh"] };
    let pg_version = std::fs::metadata(volume.pgdata.join("PG_VERSION"))?.modified()?;
    let second = bootstrap(&bin, &run_as, &volume, &creds, shell)?;
    ensure_bootstrapped(&second)?;
    quiet(&second);
    ensure!(
        second.output.contains("no initdb") && !second.output.contains("initialising"),
        "{}",
        second.output
    );
    assert_eq!(
        std::fs::metadata(volume.pgdata.join("PG_VERSION"))?.modified()?,
        pg_version
    );
    let mut server = start_server(&bin, &run_as, &volume, port, log())?;
    let app = wait_for_connection(&mut server, STARTUP, || {
        local(&creds.app_user, &creds.app_password, &creds.database)
    })
    .await?;
    assert_eq!(values(&app, "SELECT id FROM orders").await?, ["42"]);
    local(&creds.superuser, &creds.superuser_password, "postgres").await?;
    drop(app);
    drop(server);

    // A data directory that holds something but no cluster is refused, and left as it is.
    let odd = Volume::new(&run_as, &dir.path().join("odd"))?;
    std::fs::create_dir(&odd.pgdata)?;
    std::fs::write(odd.pgdata.join("keep-me"), "x")?;
    run_as.own(&odd.pgdata)?;
    let refused = bootstrap(&bin, &run_as, &odd, &creds, &["sh"])?;
    quiet(&refused);
    ensure!(!refused.success, "{}", refused.output);
    assert!(odd.pgdata.join("keep-me").is_file());
    Ok(())
}
