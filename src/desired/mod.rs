//! Pure: a tenant and the operator settings in, every Kubernetes object and AWS resource the
//! tenant should have out. No client, no I/O: the controller and `plan` share this code.

pub mod account;
pub mod aws;
pub mod cluster_network;
pub mod drift_events;
pub mod kubernetes;
pub(crate) mod names;
