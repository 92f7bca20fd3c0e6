//! What the PostgreSQL server runs besides its image: the script of its first start.

/// Run by the PostgreSQL image (from `/docker-entrypoint-initdb.d`) once, when it initialises an empty
/// data directory, after it created the superuser `POSTGRES_USER` and the database `POSTGRES_DB`:
/// creates the app role `APP_USER` with `APP_PASSWORD` (stored as a SCRAM secret, the server's
/// `password_encryption`) and makes it the database's owner. Every value comes from the credentials
/// Secret through the environment; psql's `:"…"`/`:'…'` quote them, so nothing is spliced into SQL.
///
/// The real-component test runs this very script against a real server (with `PGHOST`/`PGPORT` set).
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set app_user="$APP_USER" --set app_password="$APP_PASSWORD" --set db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
ALTER DATABASE :"db" OWNER TO :"app_user";
SQL
"#;
