//! ConfigMaps: the server's bootstrap files and pgbouncer's `pgbouncer.ini`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{Inputs, POSTGRES_UID};
use crate::names;
use crate::postgres::{bootstrap_script, passwd};

/// The init container's bootstrap script and the pod's `/etc/passwd`. Neither holds a secret. A new
/// script (a new berth) takes effect at the server's next start rather than restarting it: the pod
/// template does not change with it.
pub(super) fn server_init(inputs: &Inputs<'_>) -> ConfigMap {
    ConfigMap {
        metadata: inputs.meta(names::server_init(inputs.name), names::SERVER_COMPONENT),
        data: Some(BTreeMap::from([
            (names::INIT_KEY.to_owned(), bootstrap_script()),
            (names::PASSWD_KEY.to_owned(), passwd(POSTGRES_UID)),
        ])),
        ..ConfigMap::default()
    }
}

/// `pgbouncer.ini`, rendered by [`crate::pgbouncer::render_ini`].
pub(super) fn pool_config(inputs: &Inputs<'_>, ini: String) -> ConfigMap {
    ConfigMap {
        metadata: inputs.meta(names::pool(inputs.name), names::POOL_COMPONENT),
        data: Some(BTreeMap::from([(names::INI_KEY.to_owned(), ini)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, database};
    use super::*;

    #[test]
    fn pool_config_holds_the_rendered_ini_for_this_database() {
        let c = build(&database(
            "storage: 1Gi\npool:\n  mode: session\n  defaultPoolSize: 3\n",
        ));
        let ini = &c.pool_config.data.as_ref().unwrap()[names::INI_KEY];
        assert_eq!(c.pool_config.metadata.name.as_deref(), Some("ledger-pgbouncer"));
        assert!(
            ini.contains("\nledger = host=ledger-postgres.tenant-zz.svc port=5432 dbname=ledger\n"),
            "{ini}"
        );
        assert!(ini.contains("\npool_mode = session\n"), "{ini}");
        assert!(ini.contains("\ndefault_pool_size = 3\n"), "{ini}");
        assert!(ini.contains("\nmax_client_conn = 200\n"), "{ini}");
    }

    #[test]
    fn bootstrap_files_are_shipped() {
        let c = build(&database("storage: 1Gi\n"));
        let data = c.server_init.data.unwrap();
        assert_eq!(data[names::INIT_KEY], bootstrap_script());
        assert_eq!(data[names::PASSWD_KEY], passwd(POSTGRES_UID));
        assert_eq!(data.len(), 2);
    }
}
