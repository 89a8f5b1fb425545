//! Snapshots of every Kubernetes object `desired` renders for the example tenants, and the rules
//! those objects must follow whatever the tenant says.

use std::collections::BTreeSet;

use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::api::metadata;
use imaging_tenant_operator::config::Settings;
use imaging_tenant_operator::desired::kubernetes::{self as desired, BOUND_CLUSTER_ROLES};

fn settings() -> Settings {
    Settings {
        cluster_name: "prod-1".into(),
        region: "us-east-1".into(),
        partition: "aws".into(),
        account_id: "123456789012".into(),
        bucket_prefix: "acme-img".into(),
        audit_log_bucket: Some("acme-audit-logs".into()),
        oidc_provider_arn: "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE".into(),
        operator_role_arn: "arn:aws:iam::123456789012:role/imaging-tenant-operator".into(),
        break_glass_role_arn: Some("arn:aws:iam::123456789012:role/imaging-break-glass".into()),
        auditor_role_arns: Vec::new(),
        permissions_boundary_arn: "arn:aws:iam::123456789012:policy/imaging-tenant-boundary".into(),
        workload_service_account: "imaging-workload".into(),
        s3_vpc_endpoint_ids: Vec::new(),
        replication_region: None,
        allow_replication_opt_out: false,
    }
}

/// An example tenant as the apiserver would hand it to the operator: defaults applied, a UID.
fn example(file: &str, uid: &str) -> ImagingTenant {
    let text = std::fs::read_to_string(format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("deploy/examples/{file}: {e}"));
    let mut tenant: ImagingTenant = serde_yaml::from_str(&text).expect("example is an ImagingTenant");
    tenant.metadata.uid = Some(uid.into());
    tenant
}

fn examples() -> Vec<ImagingTenant> {
    vec![
        example("group-a.yaml", "3f9c1a2b-0000-4000-8000-00000000000a"),
        example("group-b.yaml", "5d2e7f10-0000-4000-8000-00000000000b"),
    ]
}

#[test]
fn snapshot_of_everything_rendered_for_the_examples() {
    for tenant in examples() {
        let objects = desired::render(&tenant, &settings());
        insta::assert_yaml_snapshot!(format!("kubernetes_{}", tenant.metadata.name.as_deref().unwrap()), objects);
    }
}

#[test]
fn every_object_is_labelled_owned_and_typed() {
    for tenant in examples() {
        for obj in desired::render(&tenant, &settings()) {
            let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
            assert!(obj["apiVersion"].is_string() && obj["kind"].is_string(), "{what}");
            let labels = &obj["metadata"]["labels"];
            assert_eq!(labels[metadata::MANAGED_BY_LABEL], metadata::MANAGED_BY, "{what}");
            assert_eq!(labels[metadata::TENANT_LABEL].as_str(), tenant.metadata.name.as_deref(), "{what}");
            assert_eq!(labels[metadata::TENANT_UID_LABEL].as_str(), tenant.metadata.uid.as_deref(), "{what}");
            // Invariant 12: no owner reference, so the garbage collector never removes any of it.
            assert!(obj["metadata"].get("ownerReferences").is_none(), "{what} has an owner reference");
            if obj["kind"] != "Namespace" {
                let ns = obj["metadata"]["namespace"].as_str().expect("namespaced");
                assert!(tenant.namespace_names().iter().any(|n| n == ns), "{what} outside the tenant's namespaces");
            }
        }
    }
}

#[test]
fn bindings_only_name_admin_edit_and_view() {
    let allowed: BTreeSet<&str> = BOUND_CLUSTER_ROLES.iter().map(|(_, role)| *role).collect();
    for tenant in examples() {
        for obj in desired::render(&tenant, &settings()).iter().filter(|o| o["kind"] == "RoleBinding") {
            assert_eq!(obj["roleRef"]["kind"], "ClusterRole");
            assert!(allowed.contains(obj["roleRef"]["name"].as_str().unwrap()), "{obj}");
        }
    }
}

#[test]
fn same_tenant_traffic_is_selected_by_namespace_name_only() {
    for tenant in examples() {
        let names = tenant.namespace_names();
        for obj in desired::render(&tenant, &settings()).iter().filter(|o| o["kind"] == "NetworkPolicy") {
            for rule in obj["spec"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(obj["spec"]["egress"].as_array().into_iter().flatten())
            {
                for peer in
                    rule["from"].as_array().into_iter().flatten().chain(rule["to"].as_array().into_iter().flatten())
                {
                    if let Some(sel) = peer.get("namespaceSelector") {
                        let keys: Vec<&str> = sel["matchExpressions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|e| e["key"].as_str().unwrap())
                            .chain(
                                sel["matchLabels"].as_object().into_iter().flat_map(|m| m.keys().map(String::as_str)),
                            )
                            .collect();
                        assert_eq!(keys, vec![metadata::NAMESPACE_NAME_LABEL], "{obj}");
                    }
                }
            }
            if obj["metadata"]["name"] == desired::ALLOW_SAME_TENANT {
                let values =
                    &obj["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"];
                assert_eq!(values, &serde_json::to_value(&names).unwrap());
            }
        }
    }
}
