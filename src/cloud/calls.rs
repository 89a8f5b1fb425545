//! Counts of AWS calls, for metrics and for the test that a steady state writes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// AWS calls made by one [`super::Cloud`] since it was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Operations (after the SDK's retries) by (service, operation, outcome `ok` | `error`).
    pub calls: BTreeMap<(String, String, &'static str), u64>,
    /// Operations that change something (everything but Get*, Head*, List*, Describe*),
    /// whatever their outcome.
    pub writes: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Reads a verification answered from what AWS had answered it already (not in `calls`).
    pub reused: u64,
}

impl CallStats {
    /// All operations.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CallStats) -> CallStats {
        let mut calls = self.calls.clone();
        for (key, n) in &earlier.calls {
            if let Some(count) = calls.get_mut(key) {
                *count -= (*n).min(*count);
            }
        }
        calls.retain(|_, n| *n > 0);
        CallStats {
            calls,
            writes: self.writes - earlier.writes.min(self.writes),
            attempts: self.attempts - earlier.attempts.min(self.attempts),
            reused: self.reused - earlier.reused.min(self.reused),
        }
    }

    /// `service:Operation` of every write, with counts: for assertion messages.
    pub fn write_operations(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|((_, op, _), _)| is_write(op))
            .map(|((svc, op, outcome), n)| format!("{svc}:{op} {outcome} x{n}"))
            .collect()
    }
}

/// Reads are the operations AWS names Get*, Head*, List* and Describe*.
pub(crate) fn is_write(operation: &str) -> bool {
    !["Get", "Head", "List", "Describe"].iter().any(|p| operation.starts_with(p))
}

/// The SDK interceptor that counts; one per `Cloud`, shared by its clients.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallCounter {
    stats: Arc<Mutex<CallStats>>,
}

impl CallCounter {
    pub(crate) fn snapshot(&self) -> CallStats {
        self.stats.lock().expect("call stats lock").clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().is_some_and(super::reuse::is_reused) {
            return Ok(());
        }
        self.stats.lock().expect("call stats lock").attempts += 1;
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_ascii_lowercase(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "Unknown".into()));
        // An answer the verification had already (see `reuse`) is no call to AWS.
        if context.response().is_some_and(super::reuse::is_reused) {
            self.stats.lock().expect("call stats lock").reused += 1;
            return Ok(());
        }
        let outcome = match context.output_or_error() {
            Some(Ok(_)) => "ok",
            _ => "error",
        };
        let mut stats = self.stats.lock().expect("call stats lock");
        if is_write(&operation) {
            stats.writes += 1;
        }
        *stats.calls.entry((service, operation, outcome)).or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        for read in ["GetBucketPolicy", "HeadBucket", "ListResourceTags", "DescribeKey", "GetCallerIdentity"] {
            assert!(!is_write(read), "{read}");
        }
        for write in ["PutBucketPolicy", "CreateKey", "TagResource", "UpdateAssumeRolePolicy", "DeleteBucket"] {
            assert!(is_write(write), "{write}");
        }
    }
}
