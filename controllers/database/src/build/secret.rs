//! Secrets: the credentials (generated once), pgbouncer's userlist, and the connection Secret for apps.

use std::collections::BTreeMap;

use berth_api::DeletionPolicy;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::Inputs;
use crate::names;

/// The credentials Secret. Under `deletionPolicy: Retain` it has no owner at all, so deleting the
/// Database leaves it (and the volume, kept by the StatefulSet's retention policy) behind, and a
/// Database of the same name created later logs in to the retained data with the same passwords. A
/// finalizer is not needed for that: an object without ownerReferences is never garbage-collected.
/// Switching the policy later adds or removes the reference on the next reconcile.
pub(super) fn credentials(inputs: &Inputs<'_>) -> Secret {
    let mut metadata = inputs.meta(names::credentials(inputs.name), names::SERVER_COMPONENT);
    if inputs.db.spec.deletion_policy == DeletionPolicy::Retain {
        metadata.owner_references = None;
    }
    metadata.annotations = inputs.credentials.annotations();
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(inputs.credentials.to_data()),
        ..Secret::default()
    }
}

/// The Database's CA and the two leaf certificates (see `tls`). Owned by the Database whatever the
/// deletion policy: nothing in it is data, and a Database made again gets a new CA.
pub(super) fn tls(inputs: &Inputs<'_>) -> Secret {
    let mut metadata = inputs.meta(names::tls(inputs.name), names::SERVER_COMPONENT);
    metadata.annotations = Some(inputs.tls.annotations());
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(inputs.tls.to_data()),
        ..Secret::default()
    }
}

/// `userlist.txt` for pgbouncer.
pub(super) fn pool_auth(inputs: &Inputs<'_>, userlist: String) -> Secret {
    Secret {
        metadata: inputs.meta(names::pool_auth(inputs.name), names::POOL_COMPONENT),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            names::USERLIST_KEY.to_owned(),
            ByteString(userlist.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Keys of the connection Secret.
pub(crate) const URL_KEY: &str = "DATABASE_URL";
/// What the connection Secret asks of a client's TLS.
const SSLMODE: &str = "require";

/// What an app needs to connect, as parts and as one URL, all pointing at the pool Service (never at
/// the server) with the app role, over TLS (`sslmode=require`, which the pool insists on anyway). The
/// CA's certificate is there too, as `ca.crt`: an app that mounts the Secret can go further and check
/// the pool's certificate (`sslmode=verify-full&sslrootcert=<mount>/ca.crt`), which names `host`.
pub(super) fn connection(inputs: &Inputs<'_>) -> Secret {
    let c = inputs.credentials;
    let host = names::service_host(&names::pool_service(inputs.name), inputs.namespace);
    let port = names::PORT.to_string();
    let url = format!(
        "postgresql://{}:{}@{host}:{port}/{}?sslmode={SSLMODE}",
        percent_encode(&c.app_user),
        percent_encode(&c.app_password),
        percent_encode(&c.database),
    );
    let data = [
        ("host", host),
        ("port", port),
        ("database", c.database.clone()),
        ("user", c.app_user.clone()),
        ("password", c.app_password.clone()),
        ("sslmode", SSLMODE.to_owned()),
        (crate::tls::CA_FILE, inputs.tls.ca_cert.clone()),
        (URL_KEY, url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: inputs.meta(names::connection(inputs.name), names::SERVER_COMPONENT),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters. Generated values are
/// alphanumeric; this keeps a hand-restored credentials Secret from breaking the URL.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, credentials, database};
    use super::*;
    use crate::credentials::Credentials;

    fn text(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn connection_secret_points_at_the_pool_service_with_the_app_role() {
        let c = build(&database("storage: 1Gi\n"));
        let conn = &c.connection;
        assert_eq!(conn.metadata.name.as_deref(), Some("ledger-connection"));
        assert_eq!(text(conn, "host"), "ledger.tenant-zz.svc");
        assert_eq!(
            c.pool_service.metadata.name.as_deref(),
            Some("ledger"),
            "host names the pool Service"
        );
        assert_eq!(text(conn, "port"), "5432");
        assert_eq!(text(conn, "database"), "ledger");
        assert_eq!(text(conn, "user"), "app");
        assert_eq!(text(conn, "password"), "A".repeat(32));
        assert_eq!(
            text(conn, URL_KEY),
            format!(
                "postgresql://app:{}@ledger.tenant-zz.svc:5432/ledger?sslmode=require",
                "A".repeat(32)
            )
        );
        assert_eq!(text(conn, "sslmode"), "require");
        assert_eq!(text(conn, "ca.crt"), super::super::tests::tls().ca_cert);
        assert!(!text(conn, URL_KEY).contains("postgres@") && !text(conn, URL_KEY).contains("-postgres"));
    }

    #[test]
    fn credentials_secret_stores_exactly_the_credentials() {
        let c = build(&database("storage: 1Gi\n"));
        assert_eq!(c.credentials.metadata.name.as_deref(), Some("ledger-credentials"));
        assert_eq!(Credentials::from_secret(&c.credentials).unwrap(), credentials());
    }

    #[test]
    fn tls_secret_holds_the_certificates_and_when_they_end() {
        let c = build(&database("storage: 1Gi\ndeletionPolicy: Retain\n"));
        assert_eq!(c.tls.metadata.name.as_deref(), Some("ledger-tls"));
        assert!(
            c.tls.metadata.owner_references.is_some(),
            "owned under Retain too: nothing in it is data"
        );
        let read = crate::tls::Tls::from_secret(&c.tls).unwrap();
        assert_eq!(&read, super::super::tests::tls());
    }

    #[test]
    fn userlist_lives_in_its_own_secret() {
        let c = build(&database("storage: 1Gi\n"));
        assert_eq!(
            c.pool_auth.metadata.name.as_deref(),
            Some("ledger-pgbouncer-auth")
        );
        assert!(text(&c.pool_auth, names::USERLIST_KEY).starts_with("\"app\" \"AAAA"));
    }

    #[test]
    fn odd_characters_are_percent_encoded() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
    }
}
