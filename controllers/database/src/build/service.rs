//! Services: the server's headless Service (stable DNS for the StatefulSet pod, used by pgbouncer) and
//! the pool's Service, which carries the Database's name and is the tenant's endpoint.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::names;

pub(super) fn server(inputs: &Inputs<'_>) -> Service {
    Service {
        metadata: inputs.meta(names::server(inputs.name), names::SERVER_COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(inputs.selector(names::SERVER_COMPONENT)),
            ports: Some(vec![port("postgres")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(super) fn pool(inputs: &Inputs<'_>) -> Service {
    Service {
        metadata: inputs.meta(names::pool_service(inputs.name), names::POOL_COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(inputs.selector(names::POOL_COMPONENT)),
            ports: Some(vec![port("pgbouncer")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Port 5432 speaking the PostgreSQL protocol, sent to the container port named `target`.
fn port(target: &str) -> ServicePort {
    ServicePort {
        name: Some("postgres".to_owned()),
        port: i32::from(names::PORT),
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some("postgresql".to_owned()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, database};
    use std::collections::BTreeMap;

    #[test]
    fn pool_service_is_the_endpoint_and_selects_pool_pods() {
        let c = build(&database("storage: 1Gi\n"));
        let svc = c.pool_service.spec.unwrap();
        assert_eq!(c.pool_service.metadata.name.as_deref(), Some("ledger"));
        assert_eq!(svc.ports.unwrap()[0].port, 5432);
        let pod_labels = c.pool.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let selector: BTreeMap<String, String> = svc.selector.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(selector["app.kubernetes.io/component"], "pool");
    }

    #[test]
    fn server_service_is_headless_and_named_for_the_statefulset() {
        let c = build(&database("storage: 1Gi\n"));
        let svc = c.server_service.spec.unwrap();
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        let sts = c.server.spec.unwrap();
        assert_eq!(c.server_service.metadata.name, sts.service_name);
        let pod_labels = sts.template.metadata.unwrap().labels.unwrap();
        assert!(
            svc.selector
                .unwrap()
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v))
        );
    }
}
