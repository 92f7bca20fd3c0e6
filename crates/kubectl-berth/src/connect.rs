//! The user's own access: their kubeconfig, context and impersonation, as kubectl would use them, and
//! errors that say what went wrong in the user's terms (which verb on which resource was refused).

use std::path::PathBuf;

use anyhow::anyhow;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Where and as whom to connect; the flags kubectl users know.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Target {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Username to impersonate.
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Group to impersonate; repeat for more.
    #[arg(long = "as-group", global = true)]
    pub as_groups: Vec<String>,
}

/// The client, and where it points (for messages).
pub async fn client(t: &Target) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: t.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &t.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| anyhow!("cannot read the kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    };
    let mut config = match config {
        Ok(c) => c,
        // In a pod, with no kubeconfig at all, the ServiceAccount is what kubectl would use too.
        Err(_) if t.kubeconfig.is_none() && t.context.is_none() => Config::incluster()
            .map_err(|_| anyhow!("no kubeconfig found: set KUBECONFIG or pass --kubeconfig"))?,
        Err(e) => return Err(anyhow!("cannot use the kubeconfig: {e}")),
    };
    if let Some(user) = &t.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !t.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(t.as_groups.clone());
    }
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| anyhow!("cannot set up a client for {server}: {e}"))?;
    Ok((client, server))
}

/// One request, described the way RBAC names it, to explain a refusal.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub verb: &'a str,
    /// `customers.berth.dev`, `pods`, ...
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Access<'_> {
    fn scope(&self) -> String {
        self.namespace.map_or_else(
            || "(cluster-scoped)".to_owned(),
            |ns| format!("in namespace {ns}"),
        )
    }

    fn target(&self) -> String {
        match self.name {
            Some(n) => format!("{} \"{n}\"", self.resource),
            None => self.resource.to_owned(),
        }
    }
}

/// Whether the error is the API server's "forbidden".
#[must_use]
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

#[must_use]
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// What a user reads when `access` failed with `e`.
#[must_use]
pub fn explain(e: &kube::Error, access: Access<'_>, server: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden: you may not {} {} {}; ask for a role that grants `{}` on {}. The API server said: {}",
            access.verb,
            access.target(),
            access.scope(),
            access.verb,
            access.resource,
            s.message
        ),
        kube::Error::Api(s) if s.code == 404 => {
            format!("{} not found {}: {}", access.target(), access.scope(), s.message)
        }
        kube::Error::Api(s) if s.code == 401 => format!(
            "the cluster at {server} did not accept your credentials ({}); log in again or check the kubeconfig",
            s.message
        ),
        kube::Error::Api(s) => format!(
            "{} {} {} failed: {} ({})",
            access.verb,
            access.target(),
            access.scope(),
            s.message,
            s.reason
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot reach the cluster at {server}: {e}; check that it is running and that KUBECONFIG or --context point at it"
        ),
        other => format!("{} {} {}: {other}", access.verb, access.target(), access.scope()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.to_owned(),
            reason: "Forbidden".to_owned(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn a_refusal_names_the_verb_the_resource_and_the_scope() {
        let e = api(
            403,
            "customers.berth.dev \"acme\" is forbidden: User \"alice\" cannot get resource \"customers\"",
        );
        let access = Access {
            verb: "get",
            resource: "customers.berth.dev",
            namespace: None,
            name: Some("acme"),
        };
        let text = explain(&e, access, "https://127.0.0.1:6443/");
        assert!(text.starts_with("forbidden: you may not get customers.berth.dev \"acme\" (cluster-scoped); ask for a role that grants `get` on customers.berth.dev."), "{text}");
        assert!(text.contains("User \"alice\" cannot get"), "{text}");
        let in_ns = Access {
            namespace: Some("acme"),
            verb: "list",
            resource: "pods",
            name: None,
        };
        assert!(explain(&e, in_ns, "").contains("list pods in namespace acme"));
    }
}
