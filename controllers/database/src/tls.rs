//! The certificates of a Database: a CA of its own, a server certificate for PostgreSQL and one for
//! pgbouncer, which serves clients with it and shows it to PostgreSQL as its login (certificate
//! authentication, so the pool's way in does not depend on a password that may be rotated).
//!
//! All of it lives in one Secret, `<db>-tls`. Each pod mounts only its own pair and the CA certificate
//! (a projection of the Secret's keys); the CA key stays in the Secret, where berth reads it to renew.
//! Issued once; the two leaf certificates are issued again, with the same CA, when they come within
//! [`RENEW_BEFORE_DAYS`] of expiry or when the app role they log in as changes.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::names;

/// Keys of the `<db>-tls` Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const SERVER_CERT_KEY: &str = "server.crt";
pub const SERVER_KEY_KEY: &str = "server.key";
pub const POOL_CERT_KEY: &str = "pool.crt";
pub const POOL_KEY_KEY: &str = "pool.key";
/// File names a pod sees: its own pair as `tls.crt`/`tls.key`, and the CA as `ca.crt`.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

/// Annotation on the Secret: when the leaf certificates expire (RFC 3339), so renewal needs no parsing.
pub const NOT_AFTER_ANNOTATION: &str = "berth.dev/tls-not-after";
/// Annotation on the Secret: the role the pool's certificate logs in as (its common name).
pub const CLIENT_ANNOTATION: &str = "berth.dev/tls-client";

/// The CA lasts ten years; the leaves one, renewed a month before they end.
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// PEM texts of one Database's certificates and keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_cert: String,
    ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub pool_cert: String,
    pub pool_key: String,
    /// When the leaves expire.
    pub not_after: OffsetDateTime,
    /// The common name of the pool's certificate: the role it logs in to PostgreSQL as.
    pub client: String,
}

/// Keys never reach logs.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("not_after", &self.not_after)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Where the certificates are valid: the DNS names clients use for the server's and the pool's Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    pub server: Vec<String>,
    pub pool: Vec<String>,
}

impl Subjects {
    /// Every name the Services answer to inside the cluster, short and long.
    #[must_use]
    pub fn in_cluster(db: &str, namespace: &str) -> Self {
        let names = |service: String| {
            vec![
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
                format!("{service}.{namespace}"),
                service,
            ]
        };
        Self {
            server: names(names::server(db)),
            pool: names(names::pool_service(db)),
        }
    }
}

impl Tls {
    /// A new CA and the two leaves it signs.
    ///
    /// # Errors
    /// When a key cannot be generated or a certificate signed.
    pub fn generate(
        db: &str,
        subjects: &Subjects,
        client: &str,
        now: OffsetDateTime,
    ) -> Result<Self, String> {
        let ca_key = KeyPair::generate().map_err(err)?;
        let params = ca_params(db, now);
        let ca_cert = params.self_signed(&ca_key).map_err(err)?.pem();
        let issuer = Issuer::new(params, ca_key);
        leaves(&issuer, ca_cert, subjects, client, now)
    }

    /// The same CA, new leaves.
    ///
    /// The issuer is rebuilt from the parameters the CA was made with (its name and key usages, which are
    /// all a signature takes from it) and its stored key, so no certificate needs parsing.
    ///
    /// # Errors
    /// When the stored CA key does not parse, or a key cannot be generated or a certificate signed.
    pub fn renew(
        &self,
        db: &str,
        subjects: &Subjects,
        client: &str,
        now: OffsetDateTime,
    ) -> Result<Self, String> {
        let ca_key = KeyPair::from_pem(&self.ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params(db, now), ca_key);
        leaves(&issuer, self.ca_cert.clone(), subjects, client, now)
    }

    /// True when the leaves must be issued again: close to expiry, or made for another role.
    #[must_use]
    pub fn due(&self, client: &str, now: OffsetDateTime) -> bool {
        self.client != client || now + Duration::days(RENEW_BEFORE_DAYS) >= self.not_after
    }

    /// The Secret's `data`.
    #[must_use]
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT_KEY, &self.ca_cert),
            (CA_KEY_KEY, &self.ca_key),
            (SERVER_CERT_KEY, &self.server_cert),
            (SERVER_KEY_KEY, &self.server_key),
            (POOL_CERT_KEY, &self.pool_cert),
            (POOL_KEY_KEY, &self.pool_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect()
    }

    /// The Secret's annotations.
    #[must_use]
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NOT_AFTER_ANNOTATION.to_owned(), rfc3339(self.not_after)),
            (CLIENT_ANNOTATION.to_owned(), self.client.clone()),
        ])
    }

    /// Reads the certificates back from their Secret.
    ///
    /// # Errors
    /// The first key or annotation that is missing or unreadable; berth then issues everything anew
    /// (nothing is lost: clients take the CA from the connection Secret, which follows).
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let data = secret.data.clone().unwrap_or_default();
        let pem = |key: &str| -> Result<String, String> {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| v.starts_with("-----BEGIN "))
                .ok_or_else(|| format!("key {key} is missing or not PEM"))
        };
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let not_after = annotations
            .get(NOT_AFTER_ANNOTATION)
            .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .ok_or_else(|| format!("annotation {NOT_AFTER_ANNOTATION} is missing or not RFC 3339"))?;
        Ok(Self {
            ca_cert: pem(CA_CERT_KEY)?,
            ca_key: pem(CA_KEY_KEY)?,
            server_cert: pem(SERVER_CERT_KEY)?,
            server_key: pem(SERVER_KEY_KEY)?,
            pool_cert: pem(POOL_CERT_KEY)?,
            pool_key: pem(POOL_KEY_KEY)?,
            not_after,
            client: annotations.get(CLIENT_ANNOTATION).cloned().unwrap_or_default(),
        })
    }
}

/// The certificates a reconcile uses: those in the Secret, if readable and not [`Tls::due`]; renewed
/// from its CA when due; all new when there is no Secret or it cannot be read. The second value says
/// what was issued, for an event; `None` when nothing was.
///
/// # Errors
/// When issuing fails.
pub fn current(
    secret: Option<&Secret>,
    db: &str,
    subjects: &Subjects,
    client: &str,
    now: OffsetDateTime,
) -> Result<(Tls, Option<String>), String> {
    let Some(secret) = secret else {
        let tls = Tls::generate(db, subjects, client, now)?;
        return Ok((
            tls,
            Some(format!(
                "issued a CA and certificates in Secret {}",
                names::tls(db)
            )),
        ));
    };
    match Tls::from_secret(secret) {
        Ok(tls) if !tls.due(client, now) => Ok((tls, None)),
        Ok(tls) => {
            let renewed = match tls.renew(db, subjects, client, now) {
                Ok(renewed) => renewed,
                Err(_) => Tls::generate(db, subjects, client, now)?,
            };
            let note = format!(
                "renewed the certificates in Secret {} (they ended {}; the new ones end {})",
                names::tls(db),
                rfc3339(tls.not_after),
                rfc3339(renewed.not_after)
            );
            Ok((renewed, Some(note)))
        }
        Err(unreadable) => {
            let tls = Tls::generate(db, subjects, client, now)?;
            let note = format!(
                "issued a new CA and certificates in Secret {}: {unreadable}",
                names::tls(db)
            );
            Ok((tls, Some(note)))
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[allow(clippy::needless_pass_by_value)] // the shape map_err hands it
fn err(e: rcgen::Error) -> String {
    format!("cannot issue a certificate: {e}")
}

/// Whole seconds: certificates carry no fractions, and the annotation must match what they say.
fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn ca_params(db: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&format!("berth CA of Database {db}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = truncate(now - Duration::hours(1));
    params.not_after = truncate(now + Duration::days(CA_DAYS));
    params
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The server's and the pool's certificates, both signed by `issuer`. The pool's names the app role as
/// its common name: PostgreSQL's `cert` authentication takes it as the user name.
fn leaves(
    issuer: &Issuer<'_, KeyPair>,
    ca_cert: String,
    subjects: &Subjects,
    client: &str,
    now: OffsetDateTime,
) -> Result<Tls, String> {
    let not_after = truncate(now + Duration::days(LEAF_DAYS));
    let leaf = |names: &[String], common_name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
        params.distinguished_name = dn(common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        params.not_before = truncate(now - Duration::hours(1));
        params.not_after = not_after;
        let cert = params.signed_by(&key, issuer).map_err(err)?;
        Ok::<_, String>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        &subjects.server,
        &subjects.server[0],
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    )?;
    let (pool_cert, pool_key) = leaf(
        &subjects.pool,
        client,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    Ok(Tls {
        ca_cert,
        ca_key: issuer.key().serialize_pem(),
        server_cert,
        server_key,
        pool_cert,
        pool_key,
        not_after,
        client: client.to_owned(),
    })
}

/// The first 16 hex digits of SHA-256 over a certificate: put on the server's pod template, it restarts
/// PostgreSQL when its certificate is renewed (once a year), which is when it reads the file again.
#[must_use]
pub fn cert_hash(cert: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(cert.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn subjects() -> Subjects {
        Subjects::in_cluster("ledger", "t-1")
    }

    #[test]
    fn names_cover_both_services_short_and_long() {
        let s = subjects();
        assert_eq!(s.server[0], "ledger-postgres.t-1.svc");
        assert!(s.server.contains(&"ledger-postgres".to_owned()));
        assert_eq!(s.pool[0], "ledger.t-1.svc");
        assert!(s.pool.contains(&"ledger.t-1.svc.cluster.local".to_owned()));
    }

    #[test]
    fn a_secret_round_trip_keeps_everything() {
        let tls = Tls::generate("ledger", &subjects(), "app", now()).unwrap();
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(tls.annotations()),
                ..Default::default()
            },
            data: Some(tls.to_data()),
            ..Secret::default()
        };
        assert_eq!(Tls::from_secret(&secret).unwrap(), tls);
        assert!(tls.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.pool_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{tls:?}").contains("PRIVATE"), "Debug hides keys");
    }

    #[test]
    fn renewal_is_due_a_month_before_expiry_or_for_another_role() {
        let tls = Tls::generate("ledger", &subjects(), "app", now()).unwrap();
        assert!(!tls.due("app", now()));
        assert!(!tls.due("app", now() + Duration::days(LEAF_DAYS - RENEW_BEFORE_DAYS - 1)));
        assert!(tls.due("app", now() + Duration::days(LEAF_DAYS - RENEW_BEFORE_DAYS)));
        assert!(tls.due("reporting", now()));
    }

    #[test]
    fn renewal_keeps_the_ca_and_issues_new_leaves() {
        let tls = Tls::generate("ledger", &subjects(), "app", now()).unwrap();
        let later = now() + Duration::days(340);
        let renewed = tls.renew("ledger", &subjects(), "app", later).unwrap();
        assert_eq!(renewed.ca_cert, tls.ca_cert);
        assert_eq!(renewed.ca_key, tls.ca_key);
        assert_ne!(renewed.server_cert, tls.server_cert);
        assert_ne!(renewed.pool_key, tls.pool_key);
        assert_eq!(renewed.not_after, truncate(later + Duration::days(LEAF_DAYS)));
    }

    fn secret_of(tls: &Tls) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(tls.annotations()),
                ..Default::default()
            },
            data: Some(tls.to_data()),
            ..Secret::default()
        }
    }

    #[test]
    fn current_keeps_renews_or_issues() {
        let s = subjects();
        let (fresh, note) = current(None, "ledger", &s, "app", now()).unwrap();
        assert!(note.unwrap().starts_with("issued a CA"));
        let stored = secret_of(&fresh);
        let (kept, note) = current(Some(&stored), "ledger", &s, "app", now()).unwrap();
        assert_eq!((kept, note), (fresh.clone(), None));
        let late = now() + Duration::days(LEAF_DAYS - 1);
        let (renewed, note) = current(Some(&stored), "ledger", &s, "app", late).unwrap();
        assert!(note.unwrap().starts_with("renewed"));
        assert_eq!(renewed.ca_cert, fresh.ca_cert);
        let (other, note) = current(Some(&Secret::default()), "ledger", &s, "app", now()).unwrap();
        assert!(note.unwrap().contains("issued a new CA"));
        assert_ne!(other.ca_cert, fresh.ca_cert);
    }

    #[test]
    fn a_secret_without_a_key_is_refused() {
        let tls = Tls::generate("ledger", &subjects(), "app", now()).unwrap();
        let mut data = tls.to_data();
        data.remove(CA_KEY_KEY);
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(tls.annotations()),
                ..Default::default()
            },
            data: Some(data),
            ..Secret::default()
        };
        assert!(Tls::from_secret(&secret).unwrap_err().contains(CA_KEY_KEY));
    }
}
