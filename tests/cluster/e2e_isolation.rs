//! End to end: the operator binary, the real control plane and moto. Two tenants become Ready,
//! and reading AWS back shows each one fenced off from the other at every layer (invariants 4,
//! 6 and 7).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::operator::{Operator, create_tenant, wait_ready};
use imaging_tenant_operator::api::metadata::TAG_TENANT_UID;
use imaging_tenant_operator::api::{ImagingTenant, ImagingTenantStatus};
use ito_test_support::{ControlPlane, Moto, unique_name, wait_for};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// Every ARN a policy mentions as a principal, a resource or a condition value.
fn mentioned(policy: &Value) -> String {
    policy.to_string()
}

async fn bucket_policy(moto: &Moto, bucket: &str) -> Value {
    let s3 = moto.s3_client();
    let p = s3.get_bucket_policy().bucket(bucket).send().await.expect("bucket policy");
    serde_json::from_str(p.policy().unwrap()).unwrap()
}

async fn key_policy(moto: &Moto, key_id: &str) -> Value {
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let p = kms.get_key_policy().key_id(key_id).policy_name("default").send().await.expect("key policy");
    serde_json::from_str(p.policy().unwrap()).unwrap()
}

async fn role_policies(moto: &Moto, role: &str) -> (Value, Vec<Value>) {
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config());
    let r = iam.get_role().role_name(role).send().await.expect("role");
    let trust = urlencoding::decode(r.role().unwrap().assume_role_policy_document().unwrap()).unwrap().to_string();
    let mut inline = Vec::new();
    for name in iam.list_role_policies().role_name(role).send().await.unwrap().policy_names() {
        let p = iam.get_role_policy().role_name(role).policy_name(name).send().await.unwrap();
        inline.push(serde_json::from_str(&urlencoding::decode(p.policy_document()).unwrap()).unwrap());
    }
    (serde_json::from_str(&trust).unwrap(), inline)
}

/// The bucket's settings, read back from AWS.
async fn assert_bucket_secured(moto: &Moto, status: &ImagingTenantStatus) {
    let s3 = moto.s3_client();
    let bucket = &status.bucket.as_ref().unwrap().name;
    let key_arn = &status.key.as_ref().unwrap().arn;
    let bpa = s3.get_public_access_block().bucket(bucket).send().await.unwrap();
    let c = bpa.public_access_block_configuration().unwrap();
    assert_eq!(
        (c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let own = s3.get_bucket_ownership_controls().bucket(bucket).send().await.unwrap();
    assert_eq!(own.ownership_controls().unwrap().rules()[0].object_ownership().as_str(), "BucketOwnerEnforced");
    let enc = s3.get_bucket_encryption().bucket(bucket).send().await.unwrap();
    let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
    let default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(default.sse_algorithm().as_str(), "aws:kms");
    assert_eq!(default.kms_master_key_id(), Some(key_arn.as_str()));
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    let v = s3.get_bucket_versioning().bucket(bucket).send().await.unwrap();
    assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let key_id = &status.key.as_ref().unwrap().id;
    assert!(kms.get_key_rotation_status().key_id(key_id).send().await.unwrap().key_rotation_enabled());
}

#[tokio::test]
async fn invariant_4_two_tenants_are_fenced_off_from_each_other_in_aws() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let a = unique_name("iso-a");
    let b = unique_name("iso-b");
    create_tenant(
        &client,
        &op.tenant(
            &a,
            json!({"namespaces": [{"name": a}, {"name": format!("{a}-ai")}], "tags": {"cost-center": "radiology-a"}}),
        ),
    )
    .await;
    create_tenant(&client, &op.tenant(&b, json!({"deletionPolicy": "Delete"}))).await;
    let ta = wait_ready(&client, &a).await.status.unwrap();
    let tb = wait_ready(&client, &b).await.status.unwrap();
    let (role_a, role_b) = (ta.role.clone().unwrap(), tb.role.clone().unwrap());
    let (key_a, key_b) = (ta.key.clone().unwrap(), tb.key.clone().unwrap());
    let (bucket_a, bucket_b) = (ta.bucket.clone().unwrap(), tb.bucket.clone().unwrap());
    assert_ne!(bucket_a.name, bucket_b.name);

    // Bucket policy: A's role is the only tenant principal admitted; B's is not mentioned.
    let bp = bucket_policy(moto, &bucket_a.name).await;
    let deny_others = statements(&bp)
        .into_iter()
        .find(|s| s["Effect"] == "Deny" && s["Condition"].to_string().contains("aws:PrincipalArn"))
        .expect("a statement denying every principal but the admitted ones");
    let admitted = as_list(&deny_others["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]);
    assert!(admitted.contains(&role_a.arn), "{admitted:?}");
    assert!(!admitted.contains(&role_b.arn));
    assert!(!mentioned(&bp).contains(&role_b.arn) && !mentioned(&bp).contains(&bucket_b.name));
    assert!(
        statements(&bp)
            .iter()
            .any(|s| s["Effect"] == "Deny" && s["Condition"]["Bool"]["aws:SecureTransport"] == "false")
    );
    assert!(
        statements(&bp)
            .iter()
            .any(|s| s["Effect"] == "Deny" && s["Condition"]["NumericLessThan"]["s3:TlsVersion"] == "1.2")
    );

    // Key policy: only A's role uses A's key, through S3; no statement hands it to the account.
    let kp = key_policy(moto, &key_a.id).await;
    let users: BTreeSet<String> = statements(&kp)
        .iter()
        .filter(|s| as_list(&s["Action"]).iter().any(|a| a == "kms:Decrypt" || a == "kms:*"))
        .flat_map(|s| as_list(&s["Principal"]["AWS"]))
        .collect();
    assert!(users.contains(&role_a.arn));
    assert!(!users.contains(&role_b.arn));
    assert!(!kp.to_string().contains(":root"), "the key policy hands the key to the account root: {kp}");
    let use_stmt =
        statements(&kp).into_iter().find(|s| as_list(&s["Principal"]["AWS"]) == vec![role_a.arn.clone()]).unwrap();
    assert_eq!(use_stmt["Condition"]["StringEquals"]["kms:ViaService"], "s3.us-east-1.amazonaws.com");

    // Role: trusts only A's workload ServiceAccounts; its permissions name only A's bucket and key.
    let (trust, inline) = role_policies(moto, &role_a.name).await;
    let subs: BTreeSet<String> = statements(&trust)
        .iter()
        .flat_map(|s| s["Condition"]["StringEquals"].as_object().cloned().unwrap_or_default())
        .filter(|(k, _)| k.ends_with(":sub"))
        .flat_map(|(_, v)| as_list(&v))
        .collect();
    assert_eq!(
        subs,
        BTreeSet::from([
            format!("system:serviceaccount:{a}:imaging-workload"),
            format!("system:serviceaccount:{a}-ai:imaging-workload")
        ])
    );
    assert_eq!(inline.len(), 1);
    let resources: BTreeSet<String> = statements(&inline[0]).iter().flat_map(|s| as_list(&s["Resource"])).collect();
    assert!(!resources.is_empty());
    for r in &resources {
        assert!(r.starts_with(&bucket_a.arn) || r == &key_a.arn, "role A names {r}");
    }
    assert!(!inline[0].to_string().contains(&key_b.arn) && !inline[0].to_string().contains(&bucket_b.name));

    // The workload ServiceAccounts carry the role for IRSA.
    let sa: ServiceAccount = Api::namespaced(client.clone(), &format!("{a}-ai")).get("imaging-workload").await.unwrap();
    assert_eq!(sa.annotations().get("eks.amazonaws.com/role-arn"), Some(&role_a.arn));

    assert_bucket_secured(moto, &ta).await;
    assert_bucket_secured(moto, &tb).await;

    // Deleting B (policy Delete) with an empty bucket removes its bucket and role and schedules
    // its key; A is untouched.
    let api: Api<ImagingTenant> = Api::all(client.clone());
    api.delete(&b, &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(120), "tenant B to be gone", || async {
        match api.get_opt(&b).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(t) => Err(format!("{:?}", t.status)),
        }
    })
    .await;
    let s3 = moto.s3_client();
    assert!(s3.head_bucket().bucket(&bucket_b.name).send().await.is_err(), "B's empty bucket still exists");
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let state = kms.describe_key().key_id(&key_b.id).send().await.unwrap().key_metadata().unwrap().key_state().cloned();
    assert_eq!(state.map(|s| s.as_str().to_string()), Some("PendingDeletion".into()));
    s3.head_bucket().bucket(&bucket_a.name).send().await.expect("A's bucket is untouched");
}

#[tokio::test]
async fn invariant_7_restart_mid_provisioning_leaves_one_of_each() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let mut op = Operator::start(cp, moto).await;
    let names: Vec<String> = (0..4).map(|_| unique_name("dedup")).collect();
    for n in &names {
        create_tenant(&client, &op.tenant(n, json!({}))).await;
    }
    // Kill the operator while AWS resources are being created.
    let api: Api<ImagingTenant> = Api::all(client.clone());
    wait_for(Duration::from_secs(60), "some AWS resource to be recorded", || async {
        for n in &names {
            let t = api.get(n).await.map_err(|e| e.to_string())?;
            if t.status.as_ref().is_some_and(|s| s.role.is_some() || s.key.is_some()) {
                return Ok(());
            }
        }
        Err("nothing recorded yet".into())
    })
    .await;
    op.stop();
    op.restart(cp, moto).await;

    let mut tenants = Vec::new();
    for n in &names {
        tenants.push(wait_ready(&client, n).await);
    }
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let s3 = moto.s3_client();
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config());
    let all_keys: Vec<String> = kms
        .list_keys()
        .limit(1000)
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .filter_map(|k| k.key_id().map(String::from))
        .collect();
    let buckets = s3.list_buckets().send().await.unwrap();
    let roles = iam.list_roles().path_prefix("/imaging-tenants/").max_items(1000).send().await.unwrap();
    let aliases = kms.list_aliases().limit(1000).send().await.unwrap();
    for (n, t) in names.iter().zip(tenants) {
        let uid = t.metadata.uid.clone().unwrap();
        let status = t.status.unwrap();
        // Exactly one bucket, role, alias and key for this tenant.
        assert_eq!(
            buckets.buckets().iter().filter(|b| b.name().unwrap_or_default().contains(n.as_str())).count(),
            1,
            "buckets of {n}"
        );
        assert_eq!(roles.roles().iter().filter(|r| r.role_name().contains(n.as_str())).count(), 1, "roles of {n}");
        let alias = status.key.as_ref().unwrap().alias.clone();
        assert_eq!(
            aliases.aliases().iter().filter(|a| a.alias_name() == Some(alias.as_str())).count(),
            1,
            "aliases of {n}"
        );
        let mut keys = 0;
        for key in &all_keys {
            let tags = kms.list_resource_tags().key_id(key).send().await.unwrap();
            if tags.tags().iter().any(|t| t.tag_key() == TAG_TENANT_UID && t.tag_value() == uid) {
                keys += 1;
            }
        }
        if keys != 1 {
            eprintln!("EVENTS {:#?}", crate::operator::events_for(&client, n).await);
            eprintln!("LOG {}", op.log_tail(200));
        }
        assert_eq!(keys, 1, "keys tagged with the UID of {n}");
    }
}

#[tokio::test]
async fn invariant_6_a_recreated_tenant_never_receives_the_old_data() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let name = unique_name("again");
    let api: Api<ImagingTenant> = Api::all(client.clone());
    create_tenant(&client, &op.tenant(&name, json!({}))).await;
    let first = wait_ready(&client, &name).await.status.unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(60), "the first tenant to be gone", || async {
        match api.get_opt(&name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;

    // Another group, same name: it gets its own bucket, key and role; the old ones stay retained.
    let retained_ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get(&name).await.unwrap();
    create_tenant(&client, &op.tenant(&name, json!({"namespaces": [{"name": format!("{name}-new")}]}))).await;
    let second = wait_ready(&client, &name).await.status.unwrap();
    let (old, new) = (first.bucket.clone().unwrap(), second.bucket.clone().unwrap());
    assert_ne!(old.name, new.name);
    assert_ne!(first.key.clone().unwrap().alias, second.key.clone().unwrap().alias);
    assert_ne!(first.key.clone().unwrap().id, second.key.clone().unwrap().id);
    assert_ne!(first.role.clone().unwrap().name, second.role.clone().unwrap().name);
    let s3 = moto.s3_client();
    let tags = s3.get_bucket_tagging().bucket(&old.name).send().await.expect("the retained bucket still exists");
    assert!(tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/retained" && t.value() == "true"));
    let bp = bucket_policy(moto, &new.name).await;
    assert!(!bp.to_string().contains(&first.role.clone().unwrap().arn), "the new bucket admits the old role");

    // The retained namespace carries the old tenant's UID: claiming it is a conflict, not an adoption.
    let patch = json!({"spec": {"namespaces": [{"name": format!("{name}-new")}, {"name": name}]}});
    api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let t = crate::operator::wait_condition(&client, &name, "NamespacesReady", "False", Duration::from_secs(60)).await;
    let cond = imaging_tenant_operator::api::condition::find(&t.status.unwrap().conditions, "NamespacesReady")
        .unwrap()
        .clone();
    assert_eq!(cond.reason, "NamespaceConflict", "{cond:?}");
    let ns_now = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get(&name).await.unwrap();
    assert_eq!(
        ns_now.metadata.resource_version, retained_ns.metadata.resource_version,
        "the retained namespace was modified"
    );
}
