//! Invariant 13 inside the operator: after each AWS verification, every control of the
//! tenant is judged from live state (the same reads and checks as `evidence`), and published
//! as a cluster-scoped policy report of each kind the cluster serves (discovered once), as the
//! metric `imaging_tenant_control`, and as a Warning Event for each control that starts failing.
//!
//! A setting the operator found changed and restored in the same pass (see `detection`) is
//! published as failing its controls, saying what was found and that it was restored; the
//! controls are read again `RECHECK_AFTER` later, and pass once the restored setting reads back.
//!
//! Quiet: a report is written only when its content differs from what the cluster holds, and
//! an Event only when a control's result changes. A failure here is logged, never fatal: the
//! reports describe the tenant, they do not gate its reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use super::context::Context;
use super::detection::Detection;
use crate::api::ImagingTenant;
use crate::api::metadata::FIELD_MANAGER;
use crate::evidence::controls::{self, Finding, Verdict};
use crate::evidence::policy_report::{self, KINDS, ReportKind};
use crate::evidence::{gather, read};

/// Event reason of a control that starts failing or cannot be judged.
pub(crate) const CONTROL_FAILED: &str = "ControlFailed";

/// How long the report shows a repaired setting's controls failing before they are read again:
/// long enough for whoever watches the report to see it, short enough not to mislead.
pub(crate) const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// The report kinds the cluster serves and the results last seen per tenant.
#[derive(Default)]
pub(crate) struct Reports {
    kinds: OnceCell<Vec<ReportKind>>,
    /// Per tenant UID: each control's last result.
    last: Mutex<HashMap<String, Results>>,
    /// Per tenant UID: when the controls published as repaired are to be read again.
    recheck: Mutex<HashMap<String, Recheck>>,
}

/// Each control's result, by control ID.
type Results = Box<[(&'static str, Verdict)]>;

/// The controls published as repaired are read again `at`; what was repaired since is
/// published then.
struct Recheck {
    at: Instant,
    held: Vec<Detection>,
}

impl Reports {
    /// The report kinds served, looked up once.
    async fn kinds(&self, client: &Client) -> &[ReportKind] {
        self.kinds
            .get_or_init(|| async {
                let mut served = Vec::new();
                for kind in KINDS {
                    match client.list_api_group_resources(&kind.api_version()).await {
                        Ok(list) if list.resources.iter().any(|r| r.name == kind.plural) => served.push(kind),
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => warn!(error = %e, group = kind.group, "cannot tell whether the cluster serves policy reports"),
                    }
                }
                info!(kinds = ?served.iter().map(|k| k.kind).collect::<Vec<_>>(), "policy report kinds served");
                served
            })
            .await
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.last.lock().expect("reports lock").remove(uid);
        self.recheck.lock().expect("reports lock").remove(uid);
    }

    /// How long until the controls published as repaired are read again (zero: now), if any are.
    pub(crate) fn recheck_in(&self, uid: &str) -> Option<Duration> {
        let recheck = self.recheck.lock().expect("reports lock");
        recheck.get(uid).map(|r| r.at.saturating_duration_since(Instant::now()))
    }

    /// Whether to publish now, and with which repairs: always after an AWS verification
    /// (`verified`); otherwise when something was `found` repaired, or a recheck is due. Repairs
    /// found before a pending recheck are held until it: a change undone over and over (another
    /// controller fighting over an object) costs one reading of the tenant per `RECHECK_AFTER`.
    pub(crate) fn to_publish(
        &self,
        uid: &str,
        found: Vec<Detection>,
        verified: bool,
        now: Instant,
    ) -> Option<Vec<Detection>> {
        let mut recheck = self.recheck.lock().expect("reports lock");
        match recheck.get_mut(uid) {
            Some(r) if !verified && now < r.at => {
                r.held.extend(found);
                None
            }
            Some(_) => {
                let held = recheck.remove(uid).map(|r| r.held).unwrap_or_default();
                Some(held.into_iter().chain(found).collect())
            }
            None if found.is_empty() && !verified => None,
            None => Some(found),
        }
    }
}

fn resource(kind: ReportKind) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(kind.group, kind.version, kind.kind), kind.plural)
}

/// The results a report in the cluster holds, by control ID.
fn results_of(report: &Value) -> Results {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let verdict = match r["result"].as_str()? {
                "pass" => Verdict::Pass,
                "fail" => Verdict::Fail,
                "error" => Verdict::Error,
                "skip" => Verdict::Skip,
                _ => return None,
            };
            Some((controls::control(r["policy"].as_str()?)?.id, verdict))
        })
        .collect()
}

/// The controls that judge what this pass found changed and restored fail, whatever the
/// reading after the repair says, with what was found.
fn with_detections(mut findings: Vec<Finding>, detections: &[Detection]) -> Vec<Finding> {
    for f in &mut findings {
        let notes: Vec<&str> =
            detections.iter().filter(|d| d.controls.contains(&f.control.id)).map(|d| d.note.as_str()).collect();
        if notes.is_empty() {
            continue;
        }
        f.outcome.result = Verdict::Fail;
        f.outcome.message = format!(
            "changed behind the operator's back and restored by it: {}; read after the repair: {}",
            notes.join("; "),
            f.outcome.message
        );
    }
    findings
}

/// Judges every control of the tenant and publishes the results, with those judging what
/// this pass repaired (`detections`) failing.
pub(crate) async fn publish(tenant: &ImagingTenant, ctx: &Context, detections: &[Detection]) {
    let uid = tenant.metadata.uid.clone().unwrap_or_default();
    let guards = read::guards(&ctx.client).await;
    let evidence = gather(&ctx.client, &ctx.cloud, &ctx.settings, tenant.clone(), &guards).await;
    let findings = with_detections(controls::evaluate(&evidence, &ctx.settings), detections);
    {
        let mut recheck = ctx.reports.recheck.lock().expect("reports lock");
        if detections.is_empty() {
            recheck.remove(&uid);
        } else {
            recheck.insert(uid.clone(), Recheck { at: Instant::now() + RECHECK_AFTER, held: Vec::new() });
        }
    }
    let results: Vec<(&'static str, Verdict)> = findings.iter().map(|f| (f.control.id, f.outcome.result)).collect();
    ctx.metrics.tenant_controls(&uid, tenant.tenant_name(), &results);

    let mut previous = ctx.reports.last.lock().expect("reports lock").get(&uid).cloned();
    for kind in ctx.reports.kinds(&ctx.client).await {
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource(*kind));
        let want = policy_report::render(*kind, tenant, &findings);
        let name = policy_report::name(tenant);
        let have = match api.get_opt(&name).await {
            Ok(have) => have.map(|o| serde_json::to_value(o).unwrap_or_default()),
            Err(e) => {
                warn!(error = %e, report = name, kind = kind.kind, "cannot read the tenant's policy report");
                continue;
            }
        };
        // After a restart, what the report says is what was last published.
        if previous.is_none() {
            previous = have.as_ref().map(results_of);
        }
        if have.as_ref().is_some_and(|h| policy_report::same_content(h, &want)) {
            continue;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&name, &params, &Patch::Apply(&want)).await {
            Ok(_) => debug!(report = name, kind = kind.kind, "policy report written"),
            Err(e) => warn!(error = %e, report = name, kind = kind.kind, "cannot write the tenant's policy report"),
        }
    }
    announce_failures(tenant, ctx, &findings, previous.as_ref()).await;
    let now = findings.iter().map(|f| (f.control.id, f.outcome.result)).collect();
    ctx.reports.last.lock().expect("reports lock").insert(uid, now);
}

/// A Warning Event for each control that fails (or cannot be judged) and did not before.
async fn announce_failures(tenant: &ImagingTenant, ctx: &Context, findings: &[Finding], previous: Option<&Results>) {
    for f in findings.iter().filter(|f| matches!(f.outcome.result, Verdict::Fail | Verdict::Error)) {
        if previous.and_then(|p| p.iter().find(|(id, _)| *id == f.control.id)).map(|(_, v)| v)
            == Some(&f.outcome.result)
        {
            continue;
        }
        let paragraphs: Vec<&str> = f.control.hipaa.iter().map(|h| h.paragraph()).collect();
        let note = format!(
            "{} {} ({}, HIPAA {}): {}",
            f.control.id,
            f.outcome.result.as_str(),
            f.control.title,
            paragraphs.join(", "),
            f.outcome.message
        );
        // The control is the action: Events of one reason and action form one series, whose
        // note is not updated, so each control needs its own.
        ctx.events.publish(tenant, EventType::Warning, CONTROL_FAILED, f.control.id, note).await;
    }
    debug!(tenant = %tenant.name_any(), "controls evaluated");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::controls::{CONTROLS, Outcome};

    fn passing(id: &str) -> Finding {
        let control = CONTROLS.iter().find(|c| c.id == id).expect("a control");
        Finding {
            control,
            outcome: Outcome { result: Verdict::Pass, message: "reads as wanted".into(), evidence: Value::Null },
        }
    }

    #[test]
    fn the_controls_of_a_repaired_setting_fail_with_what_was_found() {
        let found = Detection {
            controls: &["ITO-S3-06"],
            note: "restored versioning of S3 bucket b (found Some(\"Suspended\"))".into(),
        };
        let findings = with_detections(vec![passing("ITO-S3-06"), passing("ITO-S3-01")], &[found]);
        assert_eq!(findings[0].outcome.result, Verdict::Fail);
        assert!(findings[0].outcome.message.contains("Suspended"), "{}", findings[0].outcome.message);
        assert!(findings[0].outcome.message.contains("restored"));
        assert_eq!(findings[1].outcome.result, Verdict::Pass, "other controls are as read");
    }

    fn found(control: &'static [&'static str]) -> Vec<Detection> {
        vec![Detection { controls: control, note: "changed".into() }]
    }

    fn pending(reports: &Reports, uid: &str, at: Instant) {
        reports.recheck.lock().unwrap().insert(uid.into(), Recheck { at, held: Vec::new() });
    }

    #[test]
    fn nothing_repaired_and_no_recheck_due_publishes_nothing() {
        let reports = Reports::default();
        let now = Instant::now();
        assert_eq!(reports.to_publish("t", Vec::new(), false, now), None);
        assert_eq!(reports.to_publish("t", Vec::new(), true, now), Some(Vec::new()), "a verification publishes");
        assert_eq!(reports.to_publish("t", found(&["ITO-K8S-03"]), false, now), Some(found(&["ITO-K8S-03"])));
    }

    #[test]
    fn repairs_before_a_pending_recheck_are_held_until_it() {
        let reports = Reports::default();
        let now = Instant::now();
        pending(&reports, "t", now + RECHECK_AFTER);
        assert_eq!(reports.to_publish("t", found(&["ITO-K8S-05"]), false, now), None);
        assert_eq!(reports.to_publish("t", found(&["ITO-K8S-03"]), false, now), None);
        let due = now + RECHECK_AFTER;
        let published = reports.to_publish("t", Vec::new(), false, due).expect("the recheck publishes");
        assert_eq!(published, [found(&["ITO-K8S-05"]), found(&["ITO-K8S-03"])].concat());
        assert_eq!(reports.recheck_in("t"), None, "taken; publishing schedules the next");
    }

    #[test]
    fn a_verification_publishes_at_once_with_what_was_held() {
        let reports = Reports::default();
        let now = Instant::now();
        pending(&reports, "t", now + RECHECK_AFTER);
        assert_eq!(reports.to_publish("t", found(&["ITO-K8S-05"]), false, now), None);
        let published = reports.to_publish("t", found(&["ITO-S3-06"]), true, now).expect("published");
        assert_eq!(published, [found(&["ITO-K8S-05"]), found(&["ITO-S3-06"])].concat());
    }

    #[test]
    fn without_repairs_the_findings_are_as_read() {
        let findings = with_detections(vec![passing("ITO-K8S-03")], &[]);
        assert_eq!(findings[0].outcome.result, Verdict::Pass);
        assert_eq!(findings[0].outcome.message, "reads as wanted");
    }
}
