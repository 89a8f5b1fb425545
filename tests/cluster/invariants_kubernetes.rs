//! The Kubernetes-side invariants of DESIGN.md, one test each, against the real control plane,
//! moto and the operator binary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::operator::{Operator, create_tenant, wait_condition, wait_event, wait_ready};
use imaging_tenant_operator::api::metadata;
use imaging_tenant_operator::api::{ImagingTenant, condition};
use imaging_tenant_operator::desired::kubernetes as desired;
use ito_test_support::{ControlPlane, Moto, api_error_code, unique_name, wait_for};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Does `selector` select an object with `labels`? (the NetworkPolicy semantics)
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            other => panic!("unknown selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// Namespaces (by their labels) whose pods some policy in `policies` admits as ingress peers.
fn ingress_admits(policies: &[NetworkPolicy], ns_labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut admitted = Vec::new();
    for p in policies {
        let spec = p.spec.as_ref().unwrap();
        for rule in spec.ingress.iter().flatten() {
            for peer in rule.from.iter().flatten() {
                if let Some(sel) = &peer.namespace_selector
                    && selects(sel, ns_labels)
                {
                    admitted.push(p.name_any());
                }
                assert!(peer.ip_block.is_none(), "ingress by IP block in {}", p.name_any());
            }
            assert!(rule.from.is_some(), "policy {} admits ingress from everywhere", p.name_any());
        }
    }
    admitted
}

async fn namespace_labels(client: &Client, name: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(client.clone()).get(name).await.unwrap().labels().clone()
}

#[tokio::test]
async fn invariant_1_ownership_foreign_namespace_is_never_touched() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("own");
    let foreign = format!("{name}-legacy");
    // Someone else's namespace, with a workload's config in it.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": foreign, "labels": {"team": "legacy"}}})).unwrap(),
        )
        .await
        .unwrap();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &foreign);
    cm_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}, "data": {"k": "v"}})).unwrap(),
        )
        .await
        .unwrap();
    let before = serde_json::to_value(ns_api.get(&foreign).await.unwrap()).unwrap();

    create_tenant(&client, &op.tenant(&name, json!({"namespaces": [{"name": name}, {"name": foreign}]}))).await;
    let t = wait_condition(&client, &name, condition::NAMESPACES_READY, "False", Duration::from_secs(60)).await;
    let c = condition::find(&t.status.as_ref().unwrap().conditions, condition::NAMESPACES_READY).unwrap();
    assert_eq!(c.reason, "NamespaceConflict");
    assert!(c.message.contains(&foreign), "{}", c.message);
    wait_event(&client, &name, "NamespaceConflict", &foreign).await;
    // The tenant's own namespace was provisioned; AWS waits, so no role trusts the foreign one.
    wait_for(Duration::from_secs(30), "the tenant's own namespace policies", || async {
        let n = Api::<NetworkPolicy>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n >= 3 { Ok(()) } else { Err(format!("{n} policies")) }
    })
    .await;
    let t = wait_condition(&client, &name, condition::IDENTITY_READY, "False", Duration::from_secs(10)).await;
    assert_eq!(
        condition::find(&t.status.unwrap().conditions, condition::IDENTITY_READY).unwrap().reason,
        "WaitingForNamespaces"
    );

    // Byte for byte untouched, and nothing of ours inside it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = serde_json::to_value(ns_api.get(&foreign).await.unwrap()).unwrap();
    assert_eq!(before, after, "the foreign namespace was modified");
    for kind_count in [
        Api::<NetworkPolicy>::namespaced(client.clone(), &foreign)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        Api::<RoleBinding>::namespaced(client.clone(), &foreign)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        Api::<ResourceQuota>::namespaced(client.clone(), &foreign)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
    ] {
        assert_eq!(kind_count, 0, "the operator created objects in a namespace it does not own");
    }
}

#[tokio::test]
async fn invariant_1_ownership_two_tenants_one_namespace_first_keeps_it() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let first = unique_name("dup");
    let second = format!("{first}-x");
    let shared_ns = format!("{first}-x-data");
    create_tenant(&client, &op.tenant(&first, json!({"namespaces": [{"name": shared_ns}]}))).await;
    wait_condition(&client, &first, condition::NAMESPACES_READY, "True", Duration::from_secs(60)).await;
    create_tenant(&client, &op.tenant(&second, json!({"namespaces": [{"name": second}, {"name": shared_ns}]}))).await;
    let t = wait_condition(&client, &second, condition::NAMESPACES_READY, "False", Duration::from_secs(60)).await;
    let c = condition::find(&t.status.unwrap().conditions, condition::NAMESPACES_READY).unwrap().clone();
    assert_eq!(c.reason, "NamespaceConflict");
    assert!(c.message.contains(&format!("belongs to tenant '{first}'")), "{}", c.message);
    let labels = namespace_labels(&client, &shared_ns).await;
    assert_eq!(labels.get(metadata::TENANT_LABEL), Some(&first));
    let ns = Api::<Namespace>::all(client.clone()).get(&shared_ns).await.unwrap();
    let first_uid = Api::<ImagingTenant>::all(client.clone()).get(&first).await.unwrap().metadata.uid.unwrap();
    assert_eq!(ns.labels().get(metadata::TENANT_UID_LABEL), Some(&first_uid), "the first tenant keeps it");
    assert!(
        ns.owner_references().is_empty(),
        "found by label, never by an owner reference: {:?}",
        ns.owner_references()
    );
    // The first tenant's bindings are the only ones there.
    let rbs = Api::<RoleBinding>::namespaced(client.clone(), &shared_ns).list(&ListParams::default()).await.unwrap();
    assert!(rbs.items.iter().all(|rb| rb.labels().get(metadata::TENANT_LABEL) == Some(&first)));
}

/// A tenant's namespaces are its name or start with `<its name>-`: tenant `x` may not take
/// namespace `x-b` while a tenant `x-b` exists, even before `x-b` has created it.
#[tokio::test]
async fn invariant_1_ownership_a_namespace_another_tenants_name_reserves_is_not_claimed() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("rsv");
    let specific = format!("{name}-b");
    let data = format!("{specific}-data");
    create_tenant(&client, &op.tenant(&specific, json!({"namespaces": [{"name": data}]}))).await;
    wait_ready(&client, &specific).await;

    create_tenant(&client, &op.tenant(&name, json!({"namespaces": [{"name": name}, {"name": specific}]}))).await;
    let t = wait_condition(&client, &name, condition::NAMESPACES_READY, "False", Duration::from_secs(60)).await;
    let c = condition::find(&t.status.unwrap().conditions, condition::NAMESPACES_READY).cloned().unwrap();
    assert_eq!(c.reason, "NamespaceConflict");
    assert!(c.message.contains(&format!("reserved for tenant '{specific}'")), "{}", c.message);
    let namespaces = Api::<Namespace>::all(client.clone());
    assert!(namespaces.get_opt(&specific).await.unwrap().is_none(), "the reserved namespace was not created");
    assert!(namespaces.get_opt(&name).await.unwrap().is_some(), "the tenant's own namespace was");
}

#[tokio::test]
async fn invariant_1_ownership_reserved_namespaces_are_never_claimed() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let before = Api::<Namespace>::all(client.clone()).get("kube-system").await.unwrap();
    let api: Api<ImagingTenant> = Api::all(client.clone());
    for (name, namespaces, expected) in [
        ("kube", json!([{"name": "kube-system"}]), "belong to the platform"),
        ("default", json!([]), "must not be 'default'"),
    ] {
        let t: ImagingTenant = serde_json::from_value(op.tenant(name, json!({"namespaces": namespaces}))).unwrap();
        let err = api.create(&PostParams::default(), &t).await.expect_err("a reserved namespace must be rejected");
        assert_eq!(api_error_code(&err), Some(422), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    let after = Api::<Namespace>::all(client.clone()).get("kube-system").await.unwrap();
    assert_eq!(before.metadata.resource_version, after.metadata.resource_version);
    assert!(
        Api::<NetworkPolicy>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn invariant_2_network_default_deny_and_only_what_is_listed() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("net");
    let ai = format!("{name}-ai");
    let ingress_ns = unique_name("ingress");
    create_tenant(
        &client,
        &op.tenant(
            &name,
            json!({
                "namespaces": [{"name": name}, {"name": ai}],
                "network": {"allowIngressFrom": [{"namespace": ingress_ns}], "allowEgressTo": [{"cidr": "10.20.0.0/16"}]},
            }),
        ),
    )
    .await;
    wait_condition(&client, &name, condition::NETWORK_ISOLATED, "True", Duration::from_secs(60)).await;

    // A rogue namespace copying every tenant label it can see. The admission policies refuse
    // that (guardrails::namespace_creator_cannot_forge_a_tenant_namespace); made here through
    // the break-glass group, as on a cluster without them, to show the policies do not trust
    // labels either.
    let rogue = unique_name("rogue");
    let mut rogue_labels = namespace_labels(&client, &name).await;
    rogue_labels.remove("kubernetes.io/metadata.name");
    Api::<Namespace>::all(cp.break_glass_client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": rogue, "labels": rogue_labels}})).unwrap(),
        )
        .await
        .unwrap();
    let rogue_labels = namespace_labels(&client, &rogue).await;
    assert_eq!(rogue_labels.get(metadata::TENANT_LABEL), Some(&name), "the rogue namespace carries the tenant label");

    for ns in [&name, &ai] {
        let policies =
            Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items;
        let names: BTreeSet<String> = policies.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                desired::DEFAULT_DENY,
                desired::ALLOW_SAME_TENANT,
                desired::ALLOW_DNS,
                desired::ALLOW_INGRESS,
                desired::ALLOW_EGRESS
            ]
            .into_iter()
            .map(String::from)
            .collect()
        );
        // Every policy selects every pod; default deny covers both directions with no rule.
        let deny = policies.iter().find(|p| p.name_any() == desired::DEFAULT_DENY).unwrap().spec.clone().unwrap();
        assert_eq!(deny.policy_types, Some(vec!["Ingress".into(), "Egress".into()]));
        assert!(deny.ingress.is_none() && deny.egress.is_none());
        assert!(policies.iter().all(|p| p.spec.as_ref().unwrap().pod_selector == Some(LabelSelector::default())));

        // Ingress: own namespaces and the listed one; never the rogue copy, never another namespace.
        assert!(!ingress_admits(&policies, &namespace_labels(&client, &name).await).is_empty());
        assert!(!ingress_admits(&policies, &namespace_labels(&client, &ai).await).is_empty());
        let ingress_labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ingress_ns.clone())]);
        assert_eq!(ingress_admits(&policies, &ingress_labels), vec![desired::ALLOW_INGRESS.to_string()]);
        assert!(ingress_admits(&policies, &rogue_labels).is_empty(), "a policy admits the rogue namespace");
        let default_labels = namespace_labels(&client, "default").await;
        assert!(ingress_admits(&policies, &default_labels).is_empty());

        // Egress: own namespaces, kube-dns on 53, and the listed CIDR on 443 only.
        let egress: Vec<_> = policies.iter().flat_map(|p| p.spec.clone().unwrap().egress.unwrap_or_default()).collect();
        for rule in &egress {
            for peer in rule.to.iter().flatten() {
                if let Some(ns_sel) = &peer.namespace_selector {
                    assert!(!selects(ns_sel, &rogue_labels), "egress admits the rogue namespace");
                }
                if let Some(block) = &peer.ip_block {
                    assert_eq!(block.cidr, "10.20.0.0/16");
                    let ports: Vec<_> =
                        rule.ports.iter().flatten().map(|p| (p.protocol.clone(), p.port.clone())).collect();
                    assert_eq!(
                        ports,
                        vec![(
                            Some("TCP".into()),
                            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(443))
                        )]
                    );
                }
            }
            assert!(rule.to.is_some(), "an egress rule allows every destination");
        }
        let dns = policies.iter().find(|p| p.name_any() == desired::ALLOW_DNS).unwrap().spec.clone().unwrap();
        let peer = &dns.egress.unwrap()[0].to.clone().unwrap()[0];
        assert!(selects(peer.namespace_selector.as_ref().unwrap(), &namespace_labels(&client, "kube-system").await));
        assert!(!selects(peer.namespace_selector.as_ref().unwrap(), &rogue_labels));
    }
}

#[tokio::test]
async fn invariant_3_rbac_bindings_only_to_named_roles_only_in_tenant_namespaces() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let a = unique_name("rbac-a");
    let b = unique_name("rbac-b");
    let admins_a = format!("oidc:{a}-admins");
    let admins_b = format!("oidc:{b}-admins");
    create_tenant(&client, &op.tenant(&a, json!({"access": {"admins": [{"kind": "Group", "name": admins_a}], "viewers": [{"kind": "User", "name": format!("viewer@{a}")}]}}))).await;
    create_tenant(&client, &op.tenant(&b, json!({"access": {"admins": [{"kind": "Group", "name": admins_b}]}}))).await;
    wait_condition(&client, &a, condition::ACCESS_BOUND, "True", Duration::from_secs(60)).await;
    wait_condition(&client, &b, condition::ACCESS_BOUND, "True", Duration::from_secs(60)).await;

    // Bindings: exactly admin and view in A's namespace, nowhere else.
    let rbs = Api::<RoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={a}", metadata::TENANT_LABEL)))
        .await
        .unwrap()
        .items;
    let got: BTreeSet<(String, String)> =
        rbs.iter().map(|rb| (rb.namespace().unwrap(), rb.role_ref.name.clone())).collect();
    assert_eq!(got, BTreeSet::from([(a.clone(), "admin".to_string()), (a.clone(), "view".to_string())]));
    assert!(rbs.iter().all(|rb| rb.role_ref.kind == "ClusterRole"));

    let cm = |n: &str| -> ConfigMap { serde_json::from_value(json!({"metadata": {"name": n}})).unwrap() };
    let admin = cp.client_as(&format!("alice@{a}"), &[&admins_a]);
    let in_a: Api<ConfigMap> = Api::namespaced(admin.clone(), &a);
    in_a.create(&PostParams::default(), &cm("studies")).await.expect("A's admin manages A's namespace");
    let in_b: Api<ConfigMap> = Api::namespaced(admin.clone(), &b);
    let err = in_b.list(&ListParams::default()).await.expect_err("A's admin must not read B's namespace");
    assert_eq!(api_error_code(&err), Some(403));
    let err = in_b.create(&PostParams::default(), &cm("x")).await.expect_err("A's admin must not write B's namespace");
    assert_eq!(api_error_code(&err), Some(403));

    let viewer = cp.client_as(&format!("viewer@{a}"), &[]);
    let viewer_a: Api<ConfigMap> = Api::namespaced(viewer, &a);
    viewer_a.list(&ListParams::default()).await.expect("a viewer reads");
    let err = viewer_a.create(&PostParams::default(), &cm("y")).await.expect_err("a viewer cannot write");
    assert_eq!(api_error_code(&err), Some(403));
}

async fn resource_versions(client: &Client, namespaces: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ns in namespaces {
        let n = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
        out.insert(format!("Namespace/{ns}"), n.resource_version().unwrap());
        macro_rules! collect {
            ($($kind:ty),*) => {$(
                for o in Api::<$kind>::namespaced(client.clone(), ns).list(&ListParams::default().labels(metadata::MANAGED_BY_LABEL)).await.unwrap() {
                    out.insert(format!("{}/{ns}/{}", stringify!($kind), o.name_any()), o.resource_version().unwrap());
                }
            )*};
        }
        collect!(NetworkPolicy, RoleBinding, ResourceQuota, LimitRange, ServiceAccount);
    }
    out
}

#[tokio::test]
async fn invariant_8_drift_is_restored_with_an_event() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("drift");
    create_tenant(
        &client,
        &op.tenant(&name, json!({"access": {"editors": [{"kind": "Group", "name": "radiologists"}]}})),
    )
    .await;
    wait_ready(&client, &name).await;

    // Drift made through the break-glass group: nobody else may touch the operator's objects.
    let break_glass = cp.break_glass_client();
    let np: Api<NetworkPolicy> = Api::namespaced(client.clone(), &name);
    Api::<NetworkPolicy>::namespaced(break_glass.clone(), &name)
        .delete(desired::DEFAULT_DENY, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the deleted default-deny policy to come back", || async {
        np.get_opt(desired::DEFAULT_DENY).await.map_err(|e| e.to_string())?.ok_or_else(|| "absent".to_string())
    })
    .await;
    wait_event(&client, &name, "Restored", &format!("NetworkPolicy {name}/{}", desired::DEFAULT_DENY)).await;

    let rb: Api<RoleBinding> = Api::namespaced(client.clone(), &name);
    let patch = json!({"subjects": [{"kind": "Group", "name": "everyone", "apiGroup": "rbac.authorization.k8s.io"}]});
    Api::<RoleBinding>::namespaced(break_glass.clone(), &name)
        .patch("imaging-editors", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the edited binding to be restored", || async {
        let b = rb.get("imaging-editors").await.map_err(|e| e.to_string())?;
        let subjects: Vec<String> = b.subjects.unwrap_or_default().into_iter().map(|s| s.name).collect();
        if subjects == vec!["radiologists".to_string()] { Ok(()) } else { Err(format!("{subjects:?}")) }
    })
    .await;
    wait_event(&client, &name, "Repaired", &format!("RoleBinding {name}/imaging-editors")).await;

    let rq: Api<ResourceQuota> = Api::namespaced(client.clone(), &name);
    Api::<ResourceQuota>::namespaced(break_glass, &name)
        .patch(
            desired::QUOTA,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"hard": {"requests.cpu": "1000"}}})),
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the edited quota to be restored", || async {
        let q = rq.get(desired::QUOTA).await.map_err(|e| e.to_string())?;
        let cpu = q.spec.and_then(|s| s.hard).and_then(|h| h.get("requests.cpu").cloned()).map(|q| q.0);
        if cpu.as_deref() == Some("8") { Ok(()) } else { Err(format!("{cpu:?}")) }
    })
    .await;
    // Another object repaired is another Event, not a count on the binding's.
    wait_event(&client, &name, "Repaired", &format!("ResourceQuota {name}/{}", desired::QUOTA)).await;

    // The same repair again is counted into the first Event's series.
    Api::<RoleBinding>::namespaced(cp.break_glass_client(), &name)
        .patch("imaging-editors", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let binding = format!("RoleBinding {name}/imaging-editors");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    wait_for(Duration::from_secs(30), "the second repair of the binding counted into its Event", || async {
        let repaired: Vec<_> = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
            .filter(|e| e.reason.as_deref() == Some("Repaired"))
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(&binding)))
            .map(|e| e.series.map(|s| s.count))
            .collect();
        match repaired.as_slice() {
            [Some(count)] if *count >= 2 => Ok(()),
            other => Err(format!("Repaired Events of the binding, by series count: {other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn invariant_9_quiet_steady_state_makes_no_writes() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("quiet");
    let second = format!("{name}-pacs");
    create_tenant(&client, &op.tenant(&name, json!({"namespaces": [{"name": name}, {"name": second}], "access": {"viewers": [{"kind": "User", "name": "auditor"}]}}))).await;
    wait_ready(&client, &name).await;
    // Let the status write and its echo settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let namespaces = vec![name.clone(), second.clone()];
    let before = resource_versions(&client, &namespaces).await;
    let reconciles_before = op.metric_sum("imaging_tenant_operator_reconciliations_total", "").await;
    let aws_writes_before = op.metric_sum("imaging_tenant_operator_aws_writes_total", "").await;
    let aws_calls_before = op.metric_sum("imaging_tenant_operator_aws_calls_total", "").await;

    // Ask for a full re-reconcile, AWS included.
    let api: Api<ImagingTenant> = Api::all(client.clone());
    let patch =
        json!({"metadata": {"annotations": {"imaging.tenancy.dev/reconcile-requested-at": "2026-01-01T00:00:00Z"}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let tenant_rv = api.get(&name).await.unwrap().resource_version();
    wait_for(Duration::from_secs(30), "a reconcile after the request", || async {
        let n = op.metric_sum("imaging_tenant_operator_reconciliations_total", "").await;
        if n > reconciles_before { Ok(()) } else { Err(format!("{n} reconciliations")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(before, resource_versions(&client, &namespaces).await, "a steady-state reconcile wrote to a child");
    assert_eq!(
        tenant_rv,
        api.get(&name).await.unwrap().resource_version(),
        "a steady-state reconcile wrote the tenant"
    );
    let aws_writes_after = op.metric_sum("imaging_tenant_operator_aws_writes_total", "").await;
    let aws_calls_after = op.metric_sum("imaging_tenant_operator_aws_calls_total", "").await;
    assert!(aws_calls_after > aws_calls_before, "the requested reconcile did not re-read AWS");
    assert_eq!(aws_writes_before, aws_writes_after, "a steady-state reconcile wrote to AWS");
}

#[tokio::test]
async fn invariant_5_retain_detaches_and_delete_removes_namespaces() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let kept = unique_name("keep");
    let gone = unique_name("gone");
    let kept_extra = format!("{kept}-old");
    let access = json!({"viewers": [{"kind": "User", "name": "alice@group.example"}]});
    let spec = json!({"namespaces": [{"name": kept}, {"name": kept_extra}], "access": access});
    create_tenant(&client, &op.tenant(&kept, spec)).await;
    create_tenant(&client, &op.tenant(&gone, json!({"deletionPolicy": "Delete"}))).await;
    wait_ready(&client, &kept).await;
    wait_ready(&client, &gone).await;
    for ns in [&kept, &kept_extra] {
        let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
        assert!(!bindings.items.is_empty(), "{ns} has the tenant's RoleBindings before the deletion");
    }
    let api: Api<ImagingTenant> = Api::all(client.clone());
    let ns_api: Api<Namespace> = Api::all(client.clone());

    // A namespace dropped from a Retain tenant's spec is detached, not deleted.
    api.patch(&kept, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"namespaces": [{"name": kept}]}})))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the dropped namespace to be detached", || async {
        let ns = ns_api.get(&kept_extra).await.map_err(|e| e.to_string())?;
        if ns.labels().get(metadata::RETAINED_LABEL).is_some() && ns.owner_references().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", ns.metadata))
        }
    })
    .await;

    // Deleting the Retain tenant keeps both namespaces and everything in them.
    api.delete(&kept, &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(60), "the Retain tenant to be gone", || async {
        match api.get_opt(&kept).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(t) => Err(format!("{:?}", t.status)),
        }
    })
    .await;
    // Give the garbage collector time to act on anything still owned.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for ns in [&kept, &kept_extra] {
        let n = ns_api.get(ns).await.expect("a retained namespace still exists");
        assert!(n.metadata.deletion_timestamp.is_none(), "{ns} is being deleted");
        assert!(n.owner_references().is_empty());
        let policies =
            Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items;
        assert!(
            policies.iter().any(|p| p.name_any() == desired::DEFAULT_DENY),
            "retained namespace {ns} lost its default deny"
        );
        assert!(policies.iter().all(|p| p.owner_references().is_empty()));
        // Offboarding revokes access: no RoleBinding of the tenant, no IAM role on its account.
        let bindings =
            Api::<RoleBinding>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items;
        assert!(bindings.is_empty(), "retained namespace {ns} keeps RoleBindings: {bindings:?}");
        let account = Api::<ServiceAccount>::namespaced(client.clone(), ns).get("imaging-workload").await.unwrap();
        assert!(
            !account.annotations().contains_key(metadata::IRSA_ANNOTATION),
            "retained namespace {ns}: the workload ServiceAccount still names the IAM role"
        );
    }
    wait_event(&client, &kept, "AccessRevoked", "RoleBinding").await;

    // Deleting the Delete tenant removes its namespace.
    api.delete(&gone, &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(90), "the Delete tenant's namespace to disappear", || async {
        match ns_api.get_opt(&gone).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(n) => Err(format!("{:?}", n.status)),
        }
    })
    .await;
    wait_for(Duration::from_secs(60), "the Delete tenant to be gone", || async {
        match api.get_opt(&gone).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(t) => Err(format!("{:?}", t.status)),
        }
    })
    .await;
}

#[tokio::test]
async fn invariant_7_restart_in_the_middle_converges() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let mut op = Operator::start(cp, moto).await;
    let names: Vec<String> = (0..3).map(|_| unique_name("crash")).collect();
    for n in &names {
        create_tenant(&client, &op.tenant(n, json!({"namespaces": [{"name": n}, {"name": format!("{n}-ai")}]}))).await;
    }
    // Kill it as soon as provisioning is under way.
    wait_for(Duration::from_secs(30), "provisioning to start", || async {
        let ns = Api::<Namespace>::all(client.clone()).get_opt(&names[0]).await.map_err(|e| e.to_string())?;
        ns.map(|_| ()).ok_or_else(|| "no namespace yet".to_string())
    })
    .await;
    op.stop();
    op.restart(cp, moto).await;
    for n in &names {
        let t = wait_ready(&client, n).await;
        let status = t.status.unwrap();
        assert_eq!(status.namespaces, vec![n.clone(), format!("{n}-ai")]);
        let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &format!("{n}-ai"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert_eq!(policies.len(), 3, "{policies:?}");
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), n).get("imaging-workload").await.unwrap();
        assert_eq!(sa.annotations().get(metadata::IRSA_ANNOTATION), status.role.as_ref().map(|r| &r.arn));
        let quotas =
            Api::<ResourceQuota>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items;
        assert_eq!(quotas.len(), 1);
        let limits = Api::<LimitRange>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items;
        assert_eq!(limits.len(), 1);
    }
}

/// Invariant 12: removing the finalizer of a tenant by hand while the operator is down (the usual
/// "fix" for a tenant stuck in Terminating) lets the tenant disappear without the operator's
/// cleanup; the garbage collector must not take its namespace, or the isolation inside, with it.
#[tokio::test]
async fn invariant_12_the_garbage_collector_never_deletes_a_tenant_namespace() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let mut op = Operator::start(cp, moto).await;
    let name = unique_name("orphan");
    create_tenant(&client, &op.tenant(&name, json!({"deletionPolicy": "Delete"}))).await;
    let tenant = wait_ready(&client, &name).await;
    let uid = tenant.metadata.uid.clone().unwrap();
    op.stop();

    // A dependent of the tenant, to see the garbage collector act.
    let canary = config_map_owned_by(&name, &uid);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &name);
    config_maps.create(&PostParams::default(), &canary).await.unwrap();

    let api: Api<ImagingTenant> = Api::all(client.clone());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}}))).await.unwrap();
    wait_for(Duration::from_secs(120), "the garbage collector to delete the tenant's dependent", || async {
        match config_maps.get_opt("canary").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(c) => Err(format!("canary still there: {:?}", c.metadata.owner_references)),
        }
    })
    .await;

    let ns = Api::<Namespace>::all(client.clone()).get(&name).await.expect("the namespace survives its tenant");
    assert!(ns.metadata.deletion_timestamp.is_none(), "the namespace is being deleted");
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &name).list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = policies.items.iter().map(|p| p.name_any()).collect();
    assert!(names.contains(&desired::DEFAULT_DENY.to_string()), "default deny survives: {names:?}");
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &name).get_opt(desired::QUOTA).await.unwrap();
    assert!(quota.is_some(), "the quota survives");
}

fn config_map_owned_by(tenant: &str, uid: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "canary", "ownerReferences": [{
            "apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "name": tenant, "uid": uid,
        }]},
    }))
    .unwrap()
}

/// Invariant 12: objects made by earlier versions carried an owner reference to the tenant; the
/// operator removes it, so they cannot be collected with the tenant.
#[tokio::test]
async fn invariant_12_owner_references_of_earlier_versions_are_removed() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("legacy");
    create_tenant(&client, &op.tenant(&name, json!({}))).await;
    let tenant = wait_ready(&client, &name).await;
    let owner = json!([{
        "apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "name": name,
        "uid": tenant.metadata.uid.clone().unwrap(), "controller": true, "blockOwnerDeletion": true,
    }]);
    let patch = Patch::Merge(json!({"metadata": {"ownerReferences": owner}}));
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &name);
    let namespaces = Api::<Namespace>::all(client.clone());
    // As an earlier version left them (written through the break-glass group: only the operator
    // may change its objects).
    let break_glass = cp.break_glass_client();
    Api::<NetworkPolicy>::namespaced(break_glass.clone(), &name)
        .patch(desired::DEFAULT_DENY, &PatchParams::default(), &patch)
        .await
        .unwrap();
    Api::<Namespace>::all(break_glass).patch(&name, &PatchParams::default(), &patch).await.unwrap();
    wait_for(Duration::from_secs(60), "the owner references to be removed", || async {
        let np = policies.get(desired::DEFAULT_DENY).await.map_err(|e| e.to_string())?;
        let ns = namespaces.get(&name).await.map_err(|e| e.to_string())?;
        if np.owner_references().is_empty() && ns.owner_references().is_empty() {
            Ok(())
        } else {
            Err(format!("policy: {:?}, namespace: {:?}", np.owner_references(), ns.owner_references()))
        }
    })
    .await;
}

/// Invariant 12: under `Delete`, a namespace dropped from the spec is not deleted while it holds
/// PersistentVolumeClaims; the status says so, and it goes once they are gone.
#[tokio::test]
async fn invariant_12_a_dropped_namespace_holding_volumes_is_kept() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("vols");
    let extra = format!("{name}-scans");
    let spec = json!({"deletionPolicy": "Delete", "namespaces": [{"name": name}, {"name": extra}]});
    create_tenant(&client, &op.tenant(&name, spec)).await;
    wait_ready(&client, &name).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &extra);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "studies"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();

    let api: Api<ImagingTenant> = Api::all(client.clone());
    let drop = json!({"spec": {"namespaces": [{"name": name}]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&drop)).await.unwrap();
    let t = wait_condition(&client, &name, condition::DELETION_BLOCKED, "True", Duration::from_secs(60)).await;
    let blocked = condition::find(&t.status.unwrap().conditions, condition::DELETION_BLOCKED).cloned().unwrap();
    assert_eq!(blocked.reason, "NamespaceHoldsVolumes");
    assert!(blocked.message.contains(&format!("{extra} (1 PersistentVolumeClaim)")), "{}", blocked.message);
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let kept = ns_api.get(&extra).await.expect("the namespace with volumes is kept");
    assert!(kept.metadata.deletion_timestamp.is_none());

    claims.delete("studies", &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(150), "the namespace to be deleted once its volumes are gone", || async {
        match ns_api.get_opt(&extra).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(ns) => Err(format!("still there: {:?}", ns.status)),
        }
    })
    .await;
    wait_for(Duration::from_secs(60), "DeletionBlocked to clear", || async {
        let t = api.get(&name).await.map_err(|e| e.to_string())?;
        match condition::find(&t.status.map(|s| s.conditions).unwrap_or_default(), condition::DELETION_BLOCKED) {
            None => Ok(()),
            Some(c) => Err(format!("{}: {}", c.reason, c.message)),
        }
    })
    .await;
}
