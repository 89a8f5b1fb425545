//! imaging-tenant-operator: one `ImagingTenant` becomes a healthcare group's isolated namespaces,
//! network policies, RBAC, quotas, IAM role, KMS key and S3 bucket, and is kept that way.

#![warn(unreachable_pub)]

pub mod api;
pub mod aws_policies;
pub mod cloud;
pub mod config;
mod controller;
pub mod desired;
pub mod drift_events;
pub mod drill;
pub mod evidence;
mod metrics;
pub mod plan;
pub mod run;
