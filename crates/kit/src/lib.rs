//! What every berth controller does the same way. [`runtime`] runs a controller: a `Reconciler` and its
//! watches are all a controller brings. The rest is what its reconciles share: label and own children,
//! apply them under the controller's own field manager and learn what changed ([`Context::ensure`]), keep
//! conditions honest, classify errors and report those a person must act on, back off, emit events and
//! count reconciles.

pub mod apply;
pub mod cache;
pub mod changes;
#[cfg(test)]
mod chart_metrics;
pub mod conditions;
pub mod connections;
pub mod context;
pub mod error;
pub mod events;
pub mod labels;
pub mod ledger;
pub mod managers;
pub mod metrics;
pub mod namespaced;
pub mod owner;
pub mod ownership;
pub mod pace;
pub mod report;
pub mod runtime;
pub mod seal;
pub mod shared;
pub mod slim;
pub mod trace;
pub mod watch;

pub use apply::{apply, apply_status, delete_if_exists};
pub use context::{Applied, Context, Outcome, Settings, TenantAccess};
pub use error::{Error, Result};
pub use ledger::Ledger;
pub use owner::owner_ref;
