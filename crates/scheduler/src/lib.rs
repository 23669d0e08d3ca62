//! krust's scheduler: assigns every pending pod whose `schedulerName` is
//! `default-scheduler` to a node, through the `pods/binding` subresource, as
//! kube-scheduler's default profile does. It talks to the API server only through the
//! API (a [`kube::Client`]).
//!
//! A newcomer starts at [`scheduler`] (the watches, the scheduling loop, binding and
//! failure reports), then [`plugins`] (the filter and score plugins and the generic
//! mechanism that runs them), [`queue`] (active, backoff and unschedulable queues, and
//! which cluster events move which pods), [`cache`] (nodes, the pods on them, assumed
//! pods) and [`preemption`].
//!
//! [`run`] runs one scheduler; leader election (`krust-leader`) is the caller's.

pub mod cache;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod selectors;

pub use metrics::{Metrics, Summary};
pub use scheduler::{DEFAULT_SCHEDULER_NAME, SchedulerConfig, run};

/// The Lease kube-scheduler instances elect their leader on (in `kube-system`).
pub const LEASE_NAME: &str = "kube-scheduler";
