//! The auditor's report: JSON (described by `docs/evidence-report.schema.json`) or Markdown,
//! each with a SHA-256 digest a reader can recompute.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::controls::{Finding, Verdict};
use super::read::KubernetesIdentity;
use crate::cloud::CallerIdentity;

pub const KIND: &str = "ImagingTenantEvidenceReport";
pub const SCHEMA_VERSION: &str = "v1";
/// What the JSON digest is computed over, stated in the report itself.
pub const DIGEST_OVER: &str =
    "the report without its digest member, serialised as compact JSON (no whitespace) with object keys sorted, UTF-8";

/// What the report says about where and by whom it was read.
pub struct Header {
    pub generated_at: String,
    pub cluster: String,
    pub region: String,
    pub account_id: String,
    pub aws: CallerIdentity,
    pub kubernetes: KubernetesIdentity,
}

/// One tenant's findings.
pub struct TenantFindings {
    pub name: String,
    pub uid: String,
    pub read_at: String,
    pub findings: Vec<Finding>,
}

fn summary<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> Value {
    let mut counts = Map::new();
    let mut total = 0;
    for v in [Verdict::Pass, Verdict::Fail, Verdict::Error, Verdict::Skip] {
        counts.insert(v.as_str().to_string(), json!(0));
    }
    for v in verdicts {
        total += 1;
        let n = counts[v.as_str()].as_u64().unwrap_or(0) + 1;
        counts.insert(v.as_str().to_string(), json!(n));
    }
    counts.insert("controls".into(), json!(total));
    Value::Object(counts)
}

fn finding_json(f: &Finding) -> Value {
    let c = f.control;
    json!({
        "id": c.id,
        "title": c.title,
        "result": f.outcome.result,
        "severity": c.severity,
        "hipaa": c.hipaa.iter().map(|h| json!({"paragraph": h.paragraph(), "title": h.title()})).collect::<Vec<_>>(),
        "awsConfigRules": c.aws_config_rules,
        "checks": c.checks,
        "message": f.outcome.message,
        "evidence": f.outcome.evidence,
    })
}

/// The JSON report, with its digest.
pub fn json_report(header: &Header, tenants: &[TenantFindings]) -> Value {
    let all = tenants.iter().flat_map(|t| t.findings.iter().map(|f| &f.outcome.result));
    let mut total = summary(all);
    total["tenants"] = json!(tenants.len());
    let mut report = json!({
        "kind": KIND,
        "schemaVersion": SCHEMA_VERSION,
        "generator": {"name": "imaging-tenant-operator", "version": env!("CARGO_PKG_VERSION")},
        "generatedAt": header.generated_at,
        "cluster": header.cluster,
        "region": header.region,
        "accountId": header.account_id,
        "readBy": {"aws": header.aws, "kubernetes": header.kubernetes},
        "summary": total,
        "tenants": tenants.iter().map(|t| json!({
            "name": t.name,
            "uid": t.uid,
            "readAt": t.read_at,
            "summary": summary(t.findings.iter().map(|f| &f.outcome.result)),
            "controls": t.findings.iter().map(finding_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let digest = sha256_hex(canonical(&report).as_bytes());
    report["digest"] = json!({"algorithm": "SHA-256", "over": DIGEST_OVER, "value": digest});
    report
}

/// The JSON report as written: indented, with a final newline (the digest does not depend on
/// the layout).
pub fn document(report: &Value) -> String {
    let mut out = serde_json::to_string_pretty(report).expect("JSON values serialize");
    out.push('\n');
    out
}

/// Compact JSON with object keys sorted at every level.
pub fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value)).expect("JSON values serialize")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The last line of a Markdown report.
pub const MARKDOWN_DIGEST_PREFIX: &str = "SHA-256 of every line above: ";

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The same report for people; its last line is the SHA-256 of every line before it.
pub fn markdown_report(report: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    out.push_str("# Evidence report: imaging tenants\n\n");
    out.push_str(&format!(
        "| | |\n|---|---|\n| generated | {} by imaging-tenant-operator {} |\n| cluster | {} |\n| AWS account, region | {}, {} |\n| read by (AWS) | {} (user ID {}) |\n| read by (Kubernetes) | {} (groups: {}) |\n| JSON digest | {} |\n\n",
        s(&report["generatedAt"]),
        s(&report["generator"]["version"]),
        cell(&s(&report["cluster"])),
        s(&report["accountId"]),
        s(&report["region"]),
        cell(&s(&report["readBy"]["aws"]["arn"])),
        cell(&s(&report["readBy"]["aws"]["userId"])),
        cell(&s(&report["readBy"]["kubernetes"]["username"])),
        cell(
            &report["readBy"]["kubernetes"]["groups"]
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        s(&report["digest"]["value"]),
    ));
    let sum = &report["summary"];
    out.push_str(&format!(
        "{} tenants, {} control results: {} pass, {} fail, {} error, {} skip.\n\n",
        sum["tenants"], sum["controls"], sum["pass"], sum["fail"], sum["error"], sum["skip"]
    ));
    out.push_str("Results: `pass` the control holds; `fail` it does not (the message says what to do); `error` the evidence could not be read, so the control is not shown to hold; `skip` the tenant does not ask for it. Controls are described in docs/compliance.md.\n");
    for tenant in report["tenants"].as_array().into_iter().flatten() {
        let ts = &tenant["summary"];
        out.push_str(&format!(
            "\n## Tenant {} ({})\n\nRead at {}: {} pass, {} fail, {} error, {} skip.\n\n| control | result | severity | HIPAA | AWS Config | finding |\n|---|---|---|---|---|---|\n",
            s(&tenant["name"]),
            s(&tenant["uid"]),
            s(&tenant["readAt"]),
            ts["pass"],
            ts["fail"],
            ts["error"],
            ts["skip"]
        ));
        let controls = tenant["controls"].as_array().cloned().unwrap_or_default();
        for c in &controls {
            let hipaa: Vec<String> = c["hipaa"].as_array().into_iter().flatten().map(|h| s(&h["paragraph"])).collect();
            let rules: Vec<String> =
                c["awsConfigRules"].as_array().into_iter().flatten().map(|r| format!("`{}`", s(r))).collect();
            let result = s(&c["result"]);
            let shown =
                if result == "pass" || result == "skip" { result } else { format!("**{}**", result.to_uppercase()) };
            out.push_str(&format!(
                "| {} {} | {} | {} | {} | {} | {} |\n",
                s(&c["id"]),
                cell(&s(&c["title"])),
                shown,
                s(&c["severity"]),
                hipaa.join(", "),
                if rules.is_empty() { "none".into() } else { rules.join(", ") },
                cell(&s(&c["message"]))
            ));
        }
        out.push_str("\n### Evidence read\n\n");
        for c in &controls {
            if c["evidence"].is_null() {
                continue;
            }
            out.push_str(&format!("- {}: `{}`\n", s(&c["id"]), cell(&canonical(&c["evidence"]).replace('`', "'"))));
        }
    }
    out.push('\n');
    let digest = sha256_hex(out.as_bytes());
    out.push_str(&format!("{MARKDOWN_DIGEST_PREFIX}{digest}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"d": [true, {"z": null, "y": "x y"}], "c": "é"}});
        assert_eq!(canonical(&v), r#"{"a":{"c":"é","d":[true,{"y":"x y","z":null}]},"b":1}"#);
    }

    #[test]
    fn the_markdown_digest_covers_every_line_above_it() {
        let report = json!({"tenants": [], "summary": {}, "digest": {"value": "abc"}});
        let md = markdown_report(&report);
        let (body, last) = md.trim_end_matches('\n').rsplit_once('\n').unwrap();
        let digest = last.strip_prefix(MARKDOWN_DIGEST_PREFIX).unwrap();
        assert_eq!(digest, sha256_hex(format!("{body}\n").as_bytes()));
    }
}
