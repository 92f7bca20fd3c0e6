//! Real components, no cluster (DESIGN.md, testing ladder step 2): the bootstrap script the Database
//! controller ships to the PostgreSQL pod's init container, run by `sh` against this machine's
//! PostgreSQL binaries as the pod runs it (credentials only in the environment, binaries from
//! `BERTH_PG_BIN`), then the server started with the pod's command. It must initialise an empty volume
//! once and never again, leave the roles' passwords as the credentials say, and print no password.
//!
//! Needs PostgreSQL's server binaries and pgbouncer (Debian: `apt-get install -y postgresql pgbouncer`).
//! Without them the test is skipped with a message, except under `CI`, where it fails.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod real;

use anyhow::{Result, ensure};
use berth_database::{Credentials, names, postgres};
use real::{
    Binaries, Bootstrapped, RunAs, STARTUP, Volume, bootstrap, connect, ensure_bootstrapped, free_port,
    start_server, values, wait_for_connection,
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
        connect(port, &creds.app_user, &creds.app_password, &creds.database)
    })
    .await?;
    let owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()";
    assert_eq!(values(&app, owner).await?, [creds.app_user.as_str()]);
    app.batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (42)")
        .await?;
    assert!(
        connect(port, &creds.app_user, "not-the-password", &creds.database)
            .await
            .is_err(),
        "SCRAM, not trust"
    );
    let superuser = connect(port, &creds.superuser, &creds.superuser_password, "postgres").await?;
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
        connect(port, &creds.app_user, &creds.app_password, &creds.database)
    })
    .await?;
    assert_eq!(values(&app, "SELECT id FROM orders").await?, ["42"]);
    connect(port, &creds.superuser, &creds.superuser_password, "postgres").await?;
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
