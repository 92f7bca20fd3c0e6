//! The delivery core of berth's webhooks (issue #18): what a tenant's endpoint receives and how berth
//! gets it there.
//!
//! Everything here is a building block for a webhooks controller that does not exist yet; the part
//! that watches a Customer, turns what happens to its Databases and WorkflowRuns into [`event::Event`]s
//! and fans each out to the Customer's endpoints is still to be written. What is here is what that
//! controller must get right no matter how it is wired, and so is kept pure and tested on its own:
//!
//! - [`sign`]: Standard Webhooks signatures, so a receiver can use an existing library to verify us;
//! - [`event`]: the closed list of events and their CloudEvents body, with ids that survive redelivery;
//! - [`retry`]: when to try again and when to stop;
//! - [`target`]: which URLs and addresses berth refuses to call, so a tenant cannot aim berth at the
//!   cluster's inside;
//! - [`deliver`]: one POST to one already-checked address, reduced to an [`deliver::Outcome`].

pub mod deliver;
pub mod event;
pub mod retry;
pub mod sign;
pub mod target;
