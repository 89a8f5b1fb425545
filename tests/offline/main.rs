//! Tests that need no control plane and no AWS emulator: what `plan` and `crd` print, what
//! `desired` renders, and the Helm chart rendered by the pinned helm (`make k8s-bin`) and
//! checked against the README; every IAM policy judged by parliament; the GitOps health checks
//! run by gopher-lua and a CEL interpreter; the documentation's links. One binary, so the tree is
//! linked once for all of them.

mod chart_docs;
mod chart_render;
mod crd_drift;
mod desired_kubernetes;
mod doc_links;
mod drift_events;
mod gitops_health;
mod iam_parliament;
mod monitoring;
mod plan_corpus;
mod plan_output;
