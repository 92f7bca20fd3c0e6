//! `kubectl berth psql`: an interactive psql in a short-lived pod of the tenant, through its pool.
//!
//! A pod, not a port-forward: it connects the way the tenant's apps do (the pool's Service, the namespace's
//! network policies, TLS), needs no psql on the user's machine, and the password goes from the connection
//! Secret into the pod's environment without ever being read by this process or the user's terminal. The
//! pod runs the Database's own PostgreSQL image (it has psql, and the node has it) under the server's own
//! security context (so the namespace's Pod Security level admits it), and `kubectl run --rm` deletes it
//! when psql exits.

use berth_api::Database;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::connect::{Access, Target, explain};
use crate::gather::{Cluster, existing_customer};

/// A new pod's address reaches the NetworkPolicy enforcer a moment after the pod starts, and until then the
/// pool refuses it: psql starts once the pool answers (or after 30 s, to show psql's own error).
const WAIT_THEN_PSQL: &str = r#"for i in $(seq 30); do pg_isready -q -d "$DATABASE_URL" && break; sleep 1; done; exec psql "$DATABASE_URL" "$@""#;

/// What the pod needs, read from the tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub namespace: String,
    pub image: String,
    pub connection_secret: String,
    pub pod_security: Option<serde_json::Value>,
    pub container_security: Option<serde_json::Value>,
}

/// The `kubectl` arguments that start the pod and attach to psql. `tty` when the user's terminal is one.
#[must_use]
pub fn command(plan: &Plan, target: &Target, pod: &str, tty: bool, psql_args: &[String]) -> Vec<String> {
    // `$0` of the script, then psql's own arguments as `$@`.
    let mut args = vec!["psql".to_owned()];
    args.extend(psql_args.iter().cloned());
    let mut container = json!({
        // kubectl attaches to the container named like the pod.
        "name": pod,
        "image": plan.image,
        "command": ["sh", "-c", WAIT_THEN_PSQL],
        "args": args,
        "stdin": true,
        "stdinOnce": true,
        "tty": tty,
        "env": [
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": plan.connection_secret, "key": "DATABASE_URL"}}},
            // The image's root filesystem may be read-only: no history file.
            {"name": "PSQL_HISTORY", "value": "/dev/null"}
        ]
    });
    if let Some(sc) = &plan.container_security {
        container["securityContext"] = sc.clone();
    }
    let mut spec =
        json!({"containers": [container], "restartPolicy": "Never", "automountServiceAccountToken": false});
    if let Some(sc) = &plan.pod_security {
        spec["securityContext"] = sc.clone();
    }
    let overrides = json!({"apiVersion": "v1", "metadata": {"labels": {"app.kubernetes.io/name": "berth-psql"}}, "spec": spec});
    let mut out: Vec<String> = Vec::new();
    if let Some(k) = &target.kubeconfig {
        out.push(format!("--kubeconfig={}", k.display()));
    }
    if let Some(c) = &target.context {
        out.push(format!("--context={c}"));
    }
    if let Some(a) = &target.as_user {
        out.push(format!("--as={a}"));
    }
    for g in &target.as_groups {
        out.push(format!("--as-group={g}"));
    }
    out.extend(
        [
            "run",
            pod,
            "--namespace",
            &plan.namespace,
            "--rm",
            "--restart=Never",
            "--quiet",
            "--pod-running-timeout=2m",
            "--image",
            &plan.image,
        ]
        .map(str::to_owned),
    );
    out.push(if tty { "-it" } else { "-i" }.to_owned());
    out.push(format!("--overrides={overrides}"));
    out
}

/// Reads what the pod needs: the Database's connection Secret, and its server's image and security context.
pub async fn plan(c: &Cluster, customer_name: &str) -> anyhow::Result<Plan> {
    let cust = existing_customer(c, customer_name).await?;
    if !cust.spec.features.database.enabled {
        anyhow::bail!(
            "Customer \"{customer_name}\" has no database: set spec.features.database.enabled: true"
        );
    }
    let ns = cust.namespace_name();
    let refused = |e: &kube::Error, resource| {
        let a = Access {
            verb: "list",
            resource,
            namespace: Some(&ns),
            name: None,
        };
        anyhow::anyhow!(explain(e, a, &c.server))
    };
    let uid = cust.uid().unwrap_or_default();
    let dbs = Api::<Database>::namespaced(c.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| refused(&e, "databases.berth.dev"))?;
    let db = dbs
        .items
        .into_iter()
        .find(|d| d.owner_references().iter().any(|o| o.uid == uid))
        .ok_or_else(|| {
            anyhow::anyhow!("Customer \"{customer_name}\" has no Database in {ns} yet: is berth running?")
        })?;
    let status = db.status.clone().unwrap_or_default();
    let Some(secret) = status.connection_secret.clone() else {
        anyhow::bail!(
            "the database of \"{customer_name}\" has no connection Secret yet; `kubectl berth tree {customer_name}` shows what it waits for"
        );
    };
    let db_uid = db.uid().unwrap_or_default();
    let sets = Api::<StatefulSet>::namespaced(c.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| refused(&e, "statefulsets.apps"))?;
    let server = sets
        .items
        .iter()
        .find(|s| s.owner_references().iter().any(|o| o.uid == db_uid))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.template.spec.clone())
        .ok_or_else(|| {
            anyhow::anyhow!("the database server of \"{customer_name}\" has no StatefulSet yet")
        })?;
    let container = server.containers.first();
    let image = db
        .spec
        .image
        .clone()
        .or_else(|| container.and_then(|c| c.image.clone()))
        .ok_or_else(|| anyhow::anyhow!("cannot tell the PostgreSQL image of \"{customer_name}\""))?;
    Ok(Plan {
        namespace: ns,
        image,
        connection_secret: secret,
        pod_security: server
            .security_context
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        container_security: container
            .and_then(|c| c.security_context.clone())
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
    })
}

/// A pod name of the user's session: unique enough that two sessions do not collide.
#[must_use]
pub fn pod_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("berth-psql-{:05x}", (nanos ^ std::process::id()) & 0xfffff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_pod_gets_the_url_from_the_secret_and_the_servers_security_context() {
        let plan = Plan {
            namespace: "acme".to_owned(),
            image: "berth.local/postgres:17".to_owned(),
            connection_secret: "db-connection".to_owned(),
            pod_security: Some(
                json!({"runAsNonRoot": true, "runAsUser": 70, "seccompProfile": {"type": "RuntimeDefault"}}),
            ),
            container_security: Some(
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
            ),
        };
        let target = Target {
            context: Some("prod".to_owned()),
            ..Target::default()
        };
        let args = command(
            &plan,
            &target,
            "berth-psql-1",
            false,
            &["-c".to_owned(), "select 1".to_owned()],
        );
        assert_eq!(
            args[..13],
            [
                "--context=prod",
                "run",
                "berth-psql-1",
                "--namespace",
                "acme",
                "--rm",
                "--restart=Never",
                "--quiet",
                "--pod-running-timeout=2m",
                "--image",
                "berth.local/postgres:17",
                "-i",
                args[12].as_str(),
            ]
        );
        let overrides: serde_json::Value =
            serde_json::from_str(args[12].strip_prefix("--overrides=").unwrap()).unwrap();
        let c = &overrides["spec"]["containers"][0];
        assert_eq!(c["name"], "berth-psql-1");
        assert_eq!(c["command"], json!(["sh", "-c", WAIT_THEN_PSQL]));
        assert_eq!(c["args"], json!(["psql", "-c", "select 1"]));
        assert_eq!(c["tty"], false);
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"],
            json!({"name": "db-connection", "key": "DATABASE_URL"})
        );
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(overrides["spec"]["securityContext"]["runAsUser"], 70);
        // Nothing secret is in the command line: only the Secret's name.
        assert!(!args.iter().any(|a| a.contains("password")));
    }
}
