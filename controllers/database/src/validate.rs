//! What the CRD's CEL rules cannot say, checked before anything is built. A problem is reported in
//! status and as a Warning event; nothing is created for a Database that fails here.

use berth_api::Database;
use kube::ResourceExt;

use crate::names;

/// `Ok` when every child of `db` can be created as named.
pub(crate) fn validate(db: &Database) -> Result<(), String> {
    let name = db.name_any();
    if !is_dns_label(&name) || name.len() > names::MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} must be a DNS label of at most {} characters (lowercase letters, digits, '-', \
             starting with a letter): it names the pool Service and the StatefulSet",
            names::MAX_NAME_LEN
        ));
    }
    let spec = &db.spec;
    let pool = &spec.pool;
    if pool.default_pool_size < 1 || pool.max_client_connections < 1 || pool.replicas < 1 {
        return Err(
            "pool.defaultPoolSize, pool.maxClientConnections and pool.replicas must be at least 1".into(),
        );
    }
    if pool.default_pool_size > pool.max_client_connections {
        return Err("pool.defaultPoolSize must not be larger than pool.maxClientConnections".into());
    }
    if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err("image must not be empty; leave it out for the operator's default".into());
    }
    if spec.storage.0.trim().is_empty() {
        return Err("storage must be set, e.g. 10Gi".into());
    }
    Ok(())
}

/// RFC 1035 label: starts with a letter, then letters, digits or '-', not ending in '-'.
fn is_dns_label(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::database;

    fn named(name: &str) -> Database {
        let mut db = database("storage: 1Gi\n");
        db.metadata.name = Some(name.into());
        db
    }

    #[test]
    fn names_that_cannot_name_every_child_are_refused() {
        assert!(validate(&named("ledger")).is_ok());
        assert!(validate(&named(&"a".repeat(names::MAX_NAME_LEN))).is_ok());
        for bad in ["1db", "db-", "my.db", "DB", &"a".repeat(names::MAX_NAME_LEN + 1)] {
            assert!(validate(&named(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_and_image_are_checked_again() {
        let mut db = database("storage: 1Gi\npool:\n  defaultPoolSize: 9\n  maxClientConnections: 5\n");
        assert!(validate(&db).unwrap_err().contains("defaultPoolSize"));
        db.spec.pool.default_pool_size = 5;
        assert!(validate(&db).is_ok());
        db.spec.image = Some(" ".into());
        assert!(validate(&db).unwrap_err().contains("image"));
    }
}
