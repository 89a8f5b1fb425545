//! The control results of one tenant as a cluster-scoped policy report: an OpenReports
//! `ClusterReport` (`openreports.io/v1alpha1`) or a wg-policy `ClusterPolicyReport`
//! (`wgpolicyk8s.io/v1alpha2`), whichever the cluster serves. The tenant is cluster-scoped, so
//! its report is too, with the tenant as its scope; one result per control.
//!
//! Pure and deterministic: no timestamps, so an unchanged state renders an equal report and the
//! operator writes it only when something changed.

use serde_json::{Map, Value, json};

use super::controls::{Finding, Verdict};
use super::report::canonical;
use crate::api::ImagingTenant;
use crate::api::metadata::{MANAGED_BY, MANAGED_BY_LABEL, OPERATOR, TENANT_LABEL, TENANT_UID_LABEL};

/// A report kind the operator can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl ReportKind {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

pub const OPEN_REPORTS: ReportKind =
    ReportKind { group: "openreports.io", version: "v1alpha1", kind: "ClusterReport", plural: "clusterreports" };
pub const WG_POLICY: ReportKind = ReportKind {
    group: "wgpolicyk8s.io",
    version: "v1alpha2",
    kind: "ClusterPolicyReport",
    plural: "clusterpolicyreports",
};
/// Every kind, in order of preference.
pub const KINDS: [ReportKind; 2] = [OPEN_REPORTS, WG_POLICY];

/// Evidence in a result's properties is cut to this many characters (a key policy is ~2 KB).
pub const MAX_EVIDENCE: usize = 4096;

/// The name of a tenant's report.
pub fn name(tenant: &ImagingTenant) -> String {
    format!("imaging-tenant-{}", tenant.tenant_name())
}

fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max).collect();
    out.push_str("... (cut; `imaging-tenant-operator evidence` shows it whole)");
    out
}

/// One result per control, in catalogue order.
pub fn results(findings: &[Finding]) -> Vec<Value> {
    findings
        .iter()
        .map(|f| {
            let c = f.control;
            let mut properties = Map::new();
            properties.insert("title".into(), json!(c.title));
            properties
                .insert("hipaa".into(), json!(c.hipaa.iter().map(|h| h.paragraph()).collect::<Vec<_>>().join(", ")));
            if !c.aws_config_rules.is_empty() {
                properties.insert("awsConfigRules".into(), json!(c.aws_config_rules.join(", ")));
            }
            if !f.outcome.evidence.is_null() {
                properties.insert("evidence".into(), json!(cut(canonical(&f.outcome.evidence), MAX_EVIDENCE)));
            }
            json!({
                "source": OPERATOR,
                "policy": c.id,
                "rule": c.id,
                "category": c.hipaa[0].paragraph(),
                "severity": c.severity,
                "result": f.outcome.result,
                "scored": true,
                "message": f.outcome.message,
                "properties": properties,
            })
        })
        .collect()
}

/// Counts of the results as both report kinds spell them.
pub fn summary(findings: &[Finding]) -> Value {
    let count = |v: Verdict| findings.iter().filter(|f| f.outcome.result == v).count();
    json!({
        "pass": count(Verdict::Pass),
        "fail": count(Verdict::Fail),
        "warn": 0,
        "error": count(Verdict::Error),
        "skip": count(Verdict::Skip),
    })
}

/// The whole report object, ready for server-side apply.
pub fn render(kind: ReportKind, tenant: &ImagingTenant, findings: &[Finding]) -> Value {
    let uid = tenant.metadata.uid.clone().unwrap_or_default();
    let mut report = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind,
        "metadata": {
            "name": name(tenant),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                TENANT_LABEL: tenant.tenant_name(),
                TENANT_UID_LABEL: uid,
            },
            // The report describes the tenant and goes with it.
            "ownerReferences": [{
                "apiVersion": "imaging.tenancy.dev/v1alpha1",
                "kind": "ImagingTenant",
                "name": tenant.tenant_name(),
                "uid": uid,
            }],
        },
        "scope": {
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "name": tenant.tenant_name(),
            "uid": uid,
        },
        "summary": summary(findings),
        "results": results(findings),
    });
    if kind == OPEN_REPORTS {
        report["source"] = json!(OPERATOR);
    }
    report
}

/// Whether a report read from the cluster already says what `want` says.
pub fn same_content(have: &Value, want: &Value) -> bool {
    have["results"] == want["results"] && have["summary"] == want["summary"] && have["scope"] == want["scope"]
}
