//! Cluster DNS (`krust-dns`): `<svc>.<ns>.svc.cluster.local`, endpoint and pod
//! records from the API; every other name forwarded to an upstream resolver.
//!
//! A newcomer starts at [`index`] (the records, pure); the server part answers
//! questions from the latest index and forwards the rest.

pub mod forward;
pub mod index;
pub mod server;
