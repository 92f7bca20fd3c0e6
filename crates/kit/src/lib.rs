//! What every berth controller does the same way: label and own children, apply them with server-side
//! apply under one field manager per controller, keep conditions honest, classify errors, back off, emit events and
//! count reconciles.

pub mod apply;
pub mod changes;
pub mod conditions;
pub mod context;
pub mod error;
pub mod labels;
pub mod managers;
pub mod metrics;
pub mod owner;
pub mod report;
pub mod runtime;
pub mod shared;
pub mod slim;
pub mod trace;
pub mod watch;

pub use apply::{apply, apply_status, delete_if_exists};
pub use context::{Applied, Context, Outcome, Repairs, Settings};
pub use error::{Error, Result};
pub use owner::owner_ref;
