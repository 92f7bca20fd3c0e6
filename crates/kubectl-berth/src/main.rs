//! `kubectl berth`: a berth tenant in one command. Reads and writes with the user's kubeconfig and RBAC only.

mod connect;
mod gather;
mod health;
mod psql;
mod quantity;
mod render;
mod run;
mod status;
mod tree;

use std::process::ExitCode;
use std::time::Duration;

use berth_api::Customer;
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;

use crate::connect::{Access, Target, explain};
use crate::gather::{Cluster, customer_error};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl berth",
    bin_name = "kubectl berth",
    version,
    about = "A berth tenant's whole tree and health, its numbers, manual runs, psql, suspend and resume"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum Output {
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The Customer, its namespace and everything berth made there, with Ready state and age; the deepest
    /// failing objects with their full messages and latest Warning events.
    Tree {
        customer: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// A tenant's quota, database, scheduler and webhooks; without a name, one line per tenant.
    Status {
        customer: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Start a run of a workflow now, queued under the Scheduler's `workers` like a scheduled run.
    Run {
        customer: String,
        workflow: String,
        /// Return once requested, without waiting for the Scheduler to start or queue the run.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the run to appear.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// An interactive psql through the tenant's pool, in a short-lived pod of the tenant (`kubectl run --rm`).
    /// Arguments after `--` go to psql, e.g. `-- -c 'select 1'`.
    Psql {
        customer: String,
        #[arg(last = true)]
        psql_args: Vec<String>,
    },
    /// Stop the tenant's workloads (database scaled to zero, no new workflow runs); data stays.
    Suspend { customer: String },
    /// Undo `suspend`.
    Resume { customer: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print<T: Serialize>(value: &T, output: Output, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Text => print!("{}", text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// A view with parts the user may not read: shown, then each refusal on stderr, and a failing exit code
/// so scripts notice.
fn refusals(refused: &[String]) -> ExitCode {
    for r in refused {
        eprintln!("error: {r}");
    }
    if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, server) = connect::client(&cli.target).await?;
    let c = Cluster { client, server };
    let now = Timestamp::now();
    match cli.command {
        Command::Tree { customer, output } => {
            let read = gather::tenant(&c, &customer).await?;
            let Some(root) = read.customer else {
                anyhow::bail!("Customer \"{customer}\" not found");
            };
            let tree = tree::assemble(root, read.namespace, read.items);
            print(&tree, output, || {
                render::tree(&tree, now, render::Style::detect())
            })?;
            Ok(refusals(&read.refused))
        }
        Command::Status {
            customer: Some(customer),
            output,
        } => {
            let s = status::read(&c, &customer).await?;
            print(&s, output, || status::render(&s, now))?;
            Ok(refusals(&s.refused))
        }
        Command::Status {
            customer: None,
            output,
        } => {
            let (lines, refused) = status::overview(&c).await?;
            print(&lines, output, || status::render_overview(&lines, now))?;
            Ok(refusals(&refused))
        }
        Command::Run {
            customer,
            workflow,
            no_wait,
            timeout,
        } => {
            let wait = (!no_wait).then(|| Duration::from_secs(timeout));
            println!("{}", run::run(&c, &customer, &workflow, wait).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Psql { customer, psql_args } => {
            use std::io::IsTerminal as _;
            let plan = psql::plan(&c, &customer).await?;
            let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
            let args = psql::command(&plan, &cli.target, &psql::pod_name(), tty, &psql_args);
            let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
            let status = std::process::Command::new(&kubectl)
                .args(&args)
                .status()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot start {}: {e}; kubectl must be on PATH (or set KUBECTL)",
                        kubectl.to_string_lossy()
                    )
                })?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Command::Suspend { customer } => suspend(&c, &customer, true).await,
        Command::Resume { customer } => suspend(&c, &customer, false).await,
    }
}

async fn suspend(c: &Cluster, name: &str, on: bool) -> anyhow::Result<ExitCode> {
    let api: Api<Customer> = Api::all(c.client.clone());
    let patch = serde_json::json!({"spec": {"suspend": on}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            if connect::is_not_found(&e) {
                return anyhow::anyhow!(customer_error(c, name, &e));
            }
            let a = Access {
                verb: "patch",
                resource: "customers.berth.dev",
                namespace: None,
                name: Some(name),
            };
            anyhow::anyhow!(explain(&e, a, &c.server))
        })?;
    if on {
        println!(
            "Customer {name} suspended: its database scales to zero and no new workflow runs start; data stays."
        );
    } else {
        println!("Customer {name} resumed.");
    }
    Ok(ExitCode::SUCCESS)
}
