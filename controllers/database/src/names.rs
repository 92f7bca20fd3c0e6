//! Every name the Database controller gives: children, components, PostgreSQL roles, mount paths and
//! ports. Names are a pure function of the Database's name, so every reconcile (and every operator
//! restart) finds the same objects again.

/// Component label of the server side: credentials, StatefulSet, headless Service, connection Secret.
pub const SERVER_COMPONENT: &str = "database";
/// Component label of the pgbouncer side: ConfigMap, userlist Secret, Deployment, Service, PDB.
pub const POOL_COMPONENT: &str = berth_kit::labels::POOL_COMPONENT;

/// The PostgreSQL superuser. pgbouncer never sees it: its userlist holds the app role only.
pub const SUPERUSER: &str = "postgres";
/// The role applications log in as; it owns the tenant's database.
pub const APP_USER: &str = "app";

/// PostgreSQL and pgbouncer both listen here, in their pods and on their Services.
pub const PORT: u16 = berth_kit::labels::POSTGRES_PORT;

/// Longest Database name berth accepts: `<db>-postgres-<revision hash>` must stay a 63-character label.
pub const MAX_NAME_LEN: usize = 40;

/// Annotation on the pgbouncer pod template that rolls the pods when the rendered config changes.
pub const CONFIG_HASH_ANNOTATION: &str = "berth.dev/config-hash";

/// Annotation on the server's pod template that restarts PostgreSQL when its certificate is renewed.
pub const TLS_HASH_ANNOTATION: &str = "berth.dev/tls-hash";

/// Secret with the superuser's and the app role's passwords; generated once, never regenerated.
#[must_use]
pub fn credentials(db: &str) -> String {
    format!("{db}-credentials")
}

/// StatefulSet of the PostgreSQL server and its headless Service.
#[must_use]
pub fn server(db: &str) -> String {
    format!("{db}-postgres")
}

/// The server's volume claim template, mounted at [`DATA_MOUNT`]. Never renamed: the claims of existing
/// servers carry it (claim templates are immutable, and berth finds the claim by this name).
pub const DATA_VOLUME: &str = "data";

/// The claim the StatefulSet controller creates from [`DATA_VOLUME`] for the server's only pod:
/// `<template>-<StatefulSet>-<ordinal>`, the StatefulSet controller's naming, so a claim created by hand
/// under this name before the server (to pre-bind a retained volume) is the one the pod mounts.
#[must_use]
pub fn data_claim(db: &str) -> String {
    format!("{DATA_VOLUME}-{}-0", server(db))
}

/// ConfigMap with the server's bootstrap script and the pod's account file.
#[must_use]
pub fn server_init(db: &str) -> String {
    format!("{db}-postgres-init")
}

/// ConfigMap (`pgbouncer.ini`), Deployment and PodDisruptionBudget of the pool.
#[must_use]
pub fn pool(db: &str) -> String {
    format!("{db}-pgbouncer")
}

/// Secret with pgbouncer's `userlist.txt`.
#[must_use]
pub fn pool_auth(db: &str) -> String {
    format!("{db}-pgbouncer-auth")
}

/// The pool's Service: the tenant's endpoint carries the Database's own name.
#[must_use]
pub fn pool_service(db: &str) -> String {
    db.to_owned()
}

/// Secret with the Database's CA and the server's and the pool's certificates (see `tls`).
#[must_use]
pub fn tls(db: &str) -> String {
    format!("{db}-tls")
}

/// Secret apps mount: `DATABASE_URL` and its parts, pointing at the pool.
#[must_use]
pub fn connection(db: &str) -> String {
    berth_api::connection_secret(db)
}

/// In-cluster DNS name of a Service.
#[must_use]
pub fn service_host(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc")
}

/// Name of the PostgreSQL database inside the server: the Database's name with `-` turned into `_`,
/// so it needs no quoting in SQL, URLs or `pgbouncer.ini`.
#[must_use]
pub fn sql_database(db: &str) -> String {
    db.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the PostgreSQL volume is mounted, and the data directory below it (a subdirectory, so a
/// `lost+found` at the volume's root does not upset `initdb`).
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Where the init container finds the bootstrap ConfigMap.
pub const INIT_MOUNT: &str = "/etc/berth";
/// Keys (file names) in the bootstrap ConfigMap: the init container's script, and the `/etc/passwd`
/// both containers mount.
pub const INIT_KEY: &str = "bootstrap.sh";
pub const PASSWD_KEY: &str = "passwd";

/// Where pgbouncer finds its two files in the pod.
pub const POOL_CONFIG_DIR: &str = "/etc/pgbouncer/config";
pub const POOL_AUTH_DIR: &str = "/etc/pgbouncer/auth";
/// Where pgbouncer and PostgreSQL find their certificate, key and CA (see `tls`).
pub const POOL_TLS_DIR: &str = "/etc/pgbouncer/tls";
pub const SERVER_TLS_DIR: &str = "/etc/postgresql/tls";
/// Keys of the two files in their ConfigMap and Secret.
pub const INI_KEY: &str = "pgbouncer.ini";
pub const USERLIST_KEY: &str = "userlist.txt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_names_derive_from_the_database_name() {
        assert_eq!(credentials("orders"), "orders-credentials");
        assert_eq!(server("orders"), "orders-postgres");
        assert_eq!(data_claim("orders"), "data-orders-postgres-0");
        assert_eq!(pool("orders"), "orders-pgbouncer");
        assert_eq!(pool_auth("orders"), "orders-pgbouncer-auth");
        assert_eq!(pool_service("orders"), "orders");
        assert_eq!(connection("orders"), "orders-connection");
        assert_eq!(tls("orders"), "orders-tls");
        assert_eq!(service_host("orders", "tenant-q"), "orders.tenant-q.svc");
    }

    #[test]
    fn sql_database_needs_no_quoting() {
        assert_eq!(sql_database("my-shop-db2"), "my_shop_db2");
    }
}
