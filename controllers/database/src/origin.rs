//! Where a Database's passwords come from: its credentials Secret, fresh ones, or nowhere.
//!
//! The server's bootstrap script sets both passwords from the Secret at every start (see `postgres`), so
//! whatever the Secret holds *becomes* the passwords. Fresh ones are therefore generated only while no
//! database can exist yet. Once the server's StatefulSet or volume claim exists, a missing Secret is not a
//! new Database but a lost Secret: fresh passwords would silently replace the ones every client uses. Then
//! berth writes nothing and tells the platform team how to recover ([`missing_message`]).

use berth_api::Database;
use berth_kit::Error;
use berth_kit::labels::{BERTH, INSTANCE, MANAGED_BY};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::credentials::{
    APP_PASSWORD_KEY, APP_USER_KEY, Credentials, DATABASE_KEY, SUPERUSER_KEY, SUPERUSER_PASSWORD_KEY,
};
use crate::names;

/// What the cluster shows that decides where the passwords come from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen<'a> {
    /// The credentials Secret ([`names::credentials`]).
    pub secret: Option<&'a Secret>,
    /// The server's StatefulSet exists, in whatever state (being deleted included).
    pub server: bool,
    /// The server's volume claim ([`names::data_claim`]) exists, in whatever phase (being deleted included).
    pub claim: bool,
}

/// The decision, see [`origin`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Origin<'a> {
    /// Read them back from this Secret: every reconcile after the first, and every one after a restart.
    Use(&'a Secret),
    /// A new Database: no Secret, and nothing that could hold data. Generate them, once.
    Generate,
    /// No Secret, but the server may have initialised its volume with the lost passwords: generate
    /// nothing, touch nothing, report [`missing_message`].
    Missing,
}

/// Where the passwords come from.
///
/// Data may exist as soon as the claim exists (the server's pod can only have run `initdb` on a bound
/// claim), and a claim kept after its StatefulSet was deleted (`Retain`, a suspended or deleted Database,
/// a claim pre-bound by hand to a retained volume) counts. The StatefulSet counts too, although a pod
/// cannot have written without a claim: while it exists, its controller re-creates a deleted claim at once,
/// so "no claim" would only be a moment in which fresh passwords could race that controller; and a
/// StatefulSet created with another claim template (templates are immutable) names its claim otherwise.
/// So the platform team starting over deletes both (the message says so); only then are passwords
/// generated.
pub(crate) fn origin(seen: Seen<'_>) -> Origin<'_> {
    match seen {
        Seen {
            secret: Some(secret), ..
        } => Origin::Use(secret),
        Seen {
            secret: None,
            server: false,
            claim: false,
        } => Origin::Generate,
        Seen { secret: None, .. } => Origin::Missing,
    }
}

/// The condition message (and Warning event note) of [`Origin::Missing`]: what is wrong, why berth does
/// not just generate passwords, and the two ways out. Constant for a Database, so the condition does not
/// change while the platform team works through the steps.
pub(crate) fn missing_message(db: &str) -> String {
    let secret = names::credentials(db);
    let server = names::server(db);
    let claim = names::data_claim(db);
    let keys = [
        SUPERUSER_KEY,
        SUPERUSER_PASSWORD_KEY,
        DATABASE_KEY,
        APP_USER_KEY,
        APP_PASSWORD_KEY,
    ]
    .join(", ");
    format!(
        "credentials Secret {secret} is missing, but the database may hold data (StatefulSet {server} or \
         PersistentVolumeClaim {claim} exists); berth generates passwords only for a new, empty volume, \
         since new ones would lock every client out. To recover, restore Secret {secret} from a backup, \
         with label {MANAGED_BY}={BERTH} (which berth's admission policy leaves to members of \
         system:masters) and keys {keys}; or, accepting the loss of all its data, delete \
         StatefulSet {server} and PersistentVolumeClaim {claim}, and berth starts an empty database with \
         new credentials"
    )
}

/// The Databases a change of `secret` concerns (the mapper of the controller's Secret watch): its
/// controlling Database, as for every owned child, and for a credentials Secret also the Database its
/// name and instance label give. Under `Retain` that Secret has no owner, and its deletion ([`Origin::Missing`])
/// or its restore (back to [`Origin::Use`]) must still wake its Database.
pub(crate) fn databases_of<K: ResourceExt>(secret: &K) -> Vec<ObjectRef<Database>> {
    let namespace = secret.namespace();
    let mut out: Vec<ObjectRef<Database>> = secret
        .owner_references()
        .iter()
        .filter_map(|o| ObjectRef::from_owner_ref(namespace.as_deref(), o, ()))
        .collect();
    if let (Some(db), Some(namespace)) = (secret.labels().get(INSTANCE), namespace.as_deref())
        && secret.name_any() == names::credentials(db)
    {
        out.push(ObjectRef::new(db).within(namespace));
    }
    out
}

/// Fresh credentials for Database `db` ([`Origin::Generate`]).
pub(crate) fn generate(db: &str) -> Result<Credentials, Error> {
    Credentials::generate(names::SUPERUSER, &names::sql_database(db), names::APP_USER).map_err(|e| {
        internal(&format!(
            "reading the OS random generator for new credentials: {e}"
        ))
    })
}

/// `credentials` with a new app password for `rotation`.
pub(crate) fn rotate(credentials: Credentials, rotation: i32) -> Result<Credentials, Error> {
    credentials.rotate(rotation).map_err(|e| {
        internal(&format!(
            "reading the OS random generator for a new password: {e}"
        ))
    })
}

/// Credentials from an existing Secret ([`Origin::Use`]), which must be berth's and complete: berth never
/// overwrites a password that a volume may already hold.
pub(crate) fn existing(secret: &Secret) -> Result<Credentials, Error> {
    let name = secret.name_any();
    if secret.labels().get(MANAGED_BY).map(String::as_str) != Some(BERTH) {
        return Err(Error::Conflict(format!(
            "Secret {name} exists and is not managed by berth; rename or remove it"
        )));
    }
    Credentials::from_secret(secret).map_err(|problem| {
        Error::Conflict(format!(
            "credentials Secret {name}: {problem}; berth never regenerates credentials, restore the key"
        ))
    })
}

/// A local failure that is neither the API server's nor the user's, retried with back-off.
fn internal(message: &str) -> Error {
    Error::Internal(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{build, database};
    use berth_kit::labels::labels;

    #[test]
    fn passwords_are_generated_only_when_nothing_can_hold_data() {
        let secret = Secret::default();
        for server in [false, true] {
            for claim in [false, true] {
                let with = Seen {
                    secret: Some(&secret),
                    server,
                    claim,
                };
                assert_eq!(origin(with), Origin::Use(&secret), "{with:?}");
                let without = Seen {
                    secret: None,
                    server,
                    claim,
                };
                let expected = if server || claim {
                    Origin::Missing
                } else {
                    Origin::Generate
                };
                assert_eq!(origin(without), expected, "{without:?}");
            }
        }
    }

    #[test]
    fn the_missing_message_names_every_key_and_both_ways_out() {
        let message = missing_message("ledger");
        for part in [
            "Secret ledger-credentials is missing",
            "app.kubernetes.io/managed-by=berth",
            "POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, APP_USER, APP_PASSWORD",
            "restore Secret ledger-credentials from a backup",
            "delete StatefulSet ledger-postgres and PersistentVolumeClaim data-ledger-postgres-0",
        ] {
            assert!(message.contains(part), "{part:?} not in {message:?}");
        }
    }

    #[test]
    fn a_credentials_secret_wakes_its_database_with_or_without_an_owner() {
        let ledger = ObjectRef::<Database>::new("ledger").within("tenant-zz");
        for policy in ["Retain", "Delete"] {
            let children = build(&database(&format!("storage: 1Gi\ndeletionPolicy: {policy}\n")));
            let woken = databases_of(&children.credentials);
            assert!(
                !woken.is_empty() && woken.iter().all(|r| *r == ledger),
                "{policy}: {woken:?}"
            );
            assert_eq!(
                databases_of(&children.connection).as_slice(),
                std::slice::from_ref(&ledger),
                "an owned child"
            );
        }
        let mut other = build(&database("storage: 1Gi\n")).pool_auth;
        other.metadata.owner_references = None;
        assert!(databases_of(&other).is_empty(), "only the credentials go by name");
    }

    #[test]
    fn a_second_reconcile_or_a_restart_reads_the_same_passwords_back() {
        let db = database("storage: 1Gi\n");
        // First reconcile: no Secret yet, so credentials are generated and the Secret is built from them.
        let first = generate("ledger").unwrap();
        let mut stored = build(&db).credentials;
        stored.data = Some(first.to_data());
        // Second reconcile, or the first one of a restarted operator: only the Secret in the cluster is
        // known, and it gives back the same passwords.
        for _ in 0..2 {
            let again = existing(&stored).unwrap();
            assert_eq!(again, first);
            assert_eq!(again.app_password, first.app_password);
            assert_eq!(again.superuser_password, first.superuser_password);
        }
        // Whereas a Database without a Secret would get other passwords.
        assert_ne!(generate("ledger").unwrap().app_password, first.app_password);
    }

    #[test]
    fn foreign_or_incomplete_secrets_are_refused_not_overwritten() {
        let mut foreign = build(&database("storage: 1Gi\n")).credentials;
        foreign.metadata.labels = None;
        assert!(matches!(existing(&foreign), Err(Error::Conflict(_))));

        let mut incomplete = build(&database("storage: 1Gi\n")).credentials;
        incomplete.metadata.labels = Some(labels("acme-corp", "database"));
        incomplete
            .data
            .as_mut()
            .unwrap()
            .remove(crate::credentials::APP_PASSWORD_KEY);
        let err = existing(&incomplete).unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("APP_PASSWORD"),
            "{err}"
        );
    }
}
