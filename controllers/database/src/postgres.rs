//! What the PostgreSQL pod runs besides its image's binaries: the bootstrap script of its init container,
//! the `pg_hba.conf` that script writes, the account file the pod mounts, and the server's command line.
//!
//! berth relies on no image entrypoint: any image with PostgreSQL's server binaries on `PATH` (or in
//! the operator's `BERTH_POSTGRES_BIN_DIR`) and a POSIX `sh` works. The real-component tests
//! (`e2e/tests/bootstrap_real.rs`, `e2e/tests/pool_real.rs`) run exactly what is rendered here.

use crate::names;

/// Environment of the init container. The passwords come from the credentials Secret through
/// `secretKeyRef`s and are read by the script from its environment only: never from arguments, so no
/// process list shows them.
pub mod env {
    /// The data directory (also read by `initdb`, `pg_ctl` and `postgres` themselves).
    pub const PGDATA: &str = "PGDATA";
    /// Optional directory of the server binaries, put in front of `PATH`.
    pub const BIN_DIR: &str = "BERTH_PG_BIN";
    /// The operating-system account the server runs as, allowed to log in as the superuser over the
    /// bootstrap server's private socket (peer authentication).
    pub const OS_USER: &str = "BERTH_OS_USER";
    pub const SUPERUSER: &str = "BERTH_SUPERUSER";
    pub const SUPERUSER_PASSWORD: &str = "BERTH_SUPERUSER_PASSWORD";
    pub const DATABASE: &str = "BERTH_DATABASE";
    pub const APP_USER: &str = "BERTH_APP_USER";
    pub const APP_PASSWORD: &str = "BERTH_APP_PASSWORD";

    /// Every variable the script requires (all but [`BIN_DIR`]).
    pub const REQUIRED: [&str; 7] = [
        PGDATA,
        OS_USER,
        SUPERUSER,
        SUPERUSER_PASSWORD,
        DATABASE,
        APP_USER,
        APP_PASSWORD,
    ];
}

/// Name of the server's account in the pod's `/etc/passwd` (see [`passwd`]).
pub const OS_USER: &str = "postgres";

/// Where the server's unix socket lives in the pod (an emptyDir; the probes use it).
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// `pg_hba.conf`: over the socket, SCRAM; over TCP, TLS or nothing (`hostnossl … reject`), and then a
/// client certificate signed by the Database's CA whose common name is the role (`cert`). Only the pool
/// holds one, for the app role (see `tls`), so the pool is the one way in over the network, and no
/// password of the app role is checked here: rotating it never has to reach a running server. No
/// `trust`, no `peer`. Written into the data directory at every start, so what berth ships is what the
/// server enforces.
#[must_use]
pub fn pg_hba() -> String {
    [
        "# Written by berth at every start of the server; changes here are overwritten.",
        "local all all scram-sha-256",
        "hostnossl all all 0.0.0.0/0 reject",
        "hostnossl all all ::/0 reject",
        "hostssl all all 0.0.0.0/0 cert",
        "hostssl all all ::/0 cert",
    ]
    .map(|l| format!("{l}\n"))
    .concat()
}

/// The pod's `/etc/passwd`, mounted over the image's.
///
/// `initdb` (and `postgres --single`, which it runs) abort with "could not look up effective user ID"
/// when the uid has no account, and images disagree on the uid of theirs (999 in Debian's and the
/// official images, 26 in CloudNativePG's, 70 in alpine's). With its own one-line account file the pod
/// runs every image as the same uid.
#[must_use]
pub fn passwd(uid: i64) -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\n{OS_USER}:x:{uid}:{uid}:PostgreSQL:/var/lib/postgresql:/bin/sh\n"
    )
}

/// `program` in `bin_dir`, or on `PATH` when `bin_dir` is empty.
#[must_use]
pub fn bin(bin_dir: &str, program: &str) -> String {
    if bin_dir.is_empty() {
        program.to_owned()
    } else {
        format!("{}/{program}", bin_dir.trim_end_matches('/'))
    }
}

/// The server container's command: `postgres` itself, listening on every address and on
/// [`SOCKET_DIR`], with TLS from the certificate, key and CA in `tls_dir` (see `tls`). Set explicitly
/// so no image entrypoint or default command is involved.
#[must_use]
pub fn server_command(bin_dir: &str, pgdata: &str, tls_dir: &str) -> Vec<String> {
    use crate::tls::{CA_FILE, CERT_FILE, KEY_FILE};
    let mut command = vec![bin(bin_dir, "postgres"), "-D".to_owned(), pgdata.to_owned()];
    for setting in [
        "listen_addresses=*".to_owned(),
        format!("port={}", names::PORT),
        format!("unix_socket_directories={SOCKET_DIR}"),
        // The default only from PostgreSQL 14 on; a password a tenant sets is stored as SCRAM too.
        "password_encryption=scram-sha-256".to_owned(),
        "ssl=on".to_owned(),
        format!("ssl_cert_file={tls_dir}/{CERT_FILE}"),
        format!("ssl_key_file={tls_dir}/{KEY_FILE}"),
        format!("ssl_ca_file={tls_dir}/{CA_FILE}"),
        "ssl_min_protocol_version=TLSv1.2".to_owned(),
    ] {
        command.push("-c".to_owned());
        command.push(setting);
    }
    command
}

/// The init container's script, run by `sh` before every start of the server:
///
/// 1. `initdb` only when `$PGDATA` holds no cluster yet (no `PG_VERSION`): restarts and upgrades never
///    re-initialise, and `initdb` itself refuses a non-empty directory. The superuser's password reaches
///    it on standard input (`--pwfile=/dev/stdin` fed by a here-document, a pipe in dash and busybox),
///    never as an argument or a file on the volume.
/// 2. `pg_hba.conf` from [`pg_hba`].
/// 3. A bootstrap server on no TCP address, only on a socket (mode 0700) in the init container's own
///    scratch directory (`$TMPDIR`, else `/tmp`), where peer authentication lets the server's own OS
///    account in as the superuser: this works even when the passwords in the volume and in the Secret
///    differ. Failed statements are not logged (`log_min_error_statement=panic`), so SQL carrying a
///    password never reaches a log.
/// 4. One psql session: the superuser's and the app role's passwords set from the Secret (creating the
///    app role if missing), the app database created if missing, owned by the app role. psql reads the
///    passwords from the environment with a backquoted `printf`, a shell builtin, and quotes them with
///    `:'…'`; nothing is spliced into SQL and nothing shows in a process list.
/// 5. The bootstrap server stopped (also when a step fails), leaving the volume to the server container.
#[must_use]
pub fn bootstrap_script() -> String {
    BOOTSTRAP
        .replace("@PORT@", &names::PORT.to_string())
        .replace("@PG_HBA@", &shell_lines(&pg_hba()))
}

/// `text`'s lines as single-quoted arguments of `printf '%s\n'`, one per script line.
fn shell_lines(text: &str) -> String {
    text.lines()
        .map(|l| format!("    '{}'", l.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" \\\n")
}

const BOOTSTRAP: &str = r#"#!/bin/sh
# Rendered by berth: prepares PostgreSQL's data directory before every start of the server.
set -eu
if [ -n "${BERTH_PG_BIN:-}" ]; then
    PATH="$BERTH_PG_BIN:$PATH"
    export PATH
fi
: "${PGDATA:?}" "${BERTH_OS_USER:?}" "${BERTH_SUPERUSER:?}" "${BERTH_SUPERUSER_PASSWORD:?}"
: "${BERTH_DATABASE:?}" "${BERTH_APP_USER:?}" "${BERTH_APP_PASSWORD:?}"
scratch="${TMPDIR:-/tmp}"
umask 077

if [ -s "$PGDATA/PG_VERSION" ]; then
    echo "berth: $PGDATA holds a database cluster; no initdb"
else
    echo "berth: initialising $PGDATA"
    initdb --pgdata="$PGDATA" --username="$BERTH_SUPERUSER" --pwfile=/dev/stdin \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 --data-checksums <<EOF
$BERTH_SUPERUSER_PASSWORD
EOF
fi

printf '%s\n' \
@PG_HBA@ >"$PGDATA/pg_hba.conf"

printf '%s\n' 'local all all peer map=berth' >"$scratch/bootstrap_hba.conf"
printf 'berth "%s" "%s"\n' "$BERTH_OS_USER" "$BERTH_SUPERUSER" >"$scratch/bootstrap_ident.conf"
trap 'pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop' EXIT
pg_ctl --pgdata="$PGDATA" --wait --timeout=86400 --options="-c port=@PORT@ -c listen_addresses='' \
-c unix_socket_directories='$scratch' -c unix_socket_permissions=0700 \
-c hba_file='$scratch/bootstrap_hba.conf' -c ident_file='$scratch/bootstrap_ident.conf' \
-c log_statement=none -c log_min_error_statement=panic -c password_encryption=scram-sha-256" start

psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host="$scratch" --port=@PORT@ \
    --username="$BERTH_SUPERUSER" --dbname=postgres --set=superuser="$BERTH_SUPERUSER" \
    --set=app_user="$BERTH_APP_USER" --set=db="$BERTH_DATABASE" <<'SQL'
\set VERBOSITY terse
\set superuser_password `printf '%s' "$BERTH_SUPERUSER_PASSWORD"`
\set app_password `printf '%s' "$BERTH_APP_PASSWORD"`
ALTER ROLE :"superuser" WITH PASSWORD :'superuser_password';
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') AS create_role \gset
\if :create_role
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_password';
\else
ALTER ROLE :"app_user" WITH LOGIN PASSWORD :'app_password';
\endif
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS create_db \gset
\if :create_db
CREATE DATABASE :"db" OWNER :"app_user";
\endif
SQL

pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
trap - EXIT
echo "berth: $PGDATA is ready"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn script_reads_every_variable_and_splices_no_placeholder() {
        let script = bootstrap_script();
        assert!(!script.contains('@'), "{script}");
        for var in env::REQUIRED {
            assert!(script.contains(&format!("\"${{{var}:?}}\"")), "{var} is required");
        }
        assert!(script.contains("${BERTH_PG_BIN:-}"));
        assert!(script.starts_with("#!/bin/sh\n") && script.contains("\nset -eu\n"));
    }

    #[test]
    fn script_is_valid_sh() {
        let out = Command::new("sh")
            .args(["-n", "-c", &bootstrap_script()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn initdb_runs_only_without_a_cluster_and_never_trusts() {
        let script = bootstrap_script();
        let guard = script.find("if [ -s \"$PGDATA/PG_VERSION\" ]").unwrap();
        let initdb = script.find("initdb ").unwrap();
        let fi = script[initdb..].find("\nfi\n").unwrap() + initdb;
        assert!(guard < initdb, "initdb sits in the else branch of the guard");
        assert!(script[guard..initdb].contains("\nelse\n"));
        assert!(script[initdb..fi].contains("--auth-local=scram-sha-256 --auth-host=scram-sha-256"));
        assert!(!script.contains("trust"));
        assert!(!pg_hba().contains("trust") && !pg_hba().contains("peer"));
        let hba = pg_hba();
        let tcp: Vec<&str> = hba.lines().filter(|l| l.starts_with("host")).collect();
        assert!(
            tcp.iter()
                .all(|l| l.starts_with("hostnossl") && l.ends_with(" reject") || l.ends_with(" cert")),
            "over TCP: TLS with a client certificate, or nothing: {tcp:?}"
        );
        assert!(tcp[0].starts_with("hostnossl"), "the refusal comes first");
    }

    #[test]
    fn passwords_never_appear_in_an_argument() {
        // Every mention of a password variable is in psql's backquoted printf (a builtin, run by the
        // shell psql starts, which expands it itself) or in the here-document initdb reads.
        let script = bootstrap_script();
        for var in [env::SUPERUSER_PASSWORD, env::APP_PASSWORD] {
            for (at, _) in script.match_indices(&format!("${var}")) {
                let line = script[..at].rsplit('\n').next().unwrap_or_default();
                let line = format!("{line}{}", &script[at..].split('\n').next().unwrap_or_default());
                let allowed = line == format!("${var}")
                    || line.starts_with("\\set ") && line.contains("`printf '%s' \"$");
                assert!(allowed, "{var} in: {line}");
            }
        }
    }

    #[test]
    fn pg_hba_lines_reach_the_script_verbatim() {
        let script = bootstrap_script();
        for line in pg_hba().lines() {
            assert!(script.contains(&format!("'{line}'")), "{line}");
        }
        assert_eq!(
            pg_hba().lines().filter(|l| l.ends_with(" scram-sha-256")).count(),
            1,
            "the socket only"
        );
    }

    #[test]
    fn passwd_names_the_uid() {
        let line = passwd(999).lines().nth(1).unwrap().to_owned();
        assert_eq!(line, "postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh");
    }

    #[test]
    fn server_command_needs_no_entrypoint() {
        let cmd = server_command("", "/d/pgdata", "/t");
        assert_eq!(cmd[..3], ["postgres", "-D", "/d/pgdata"]);
        assert!(cmd.contains(&"listen_addresses=*".to_owned()));
        assert!(cmd.contains(&"unix_socket_directories=/var/run/postgresql".to_owned()));
        for tls in [
            "ssl=on",
            "ssl_cert_file=/t/tls.crt",
            "ssl_key_file=/t/tls.key",
            "ssl_ca_file=/t/ca.crt",
        ] {
            assert!(cmd.contains(&tls.to_owned()), "{tls}");
        }
        assert_eq!(
            server_command("/usr/lib/postgresql/17/bin/", "/d", "/t")[0],
            "/usr/lib/postgresql/17/bin/postgres"
        );
    }
}
