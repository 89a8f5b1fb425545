//! Tenants, settings and read-backs shared by the `cloud_*` tests (all against moto).

use std::collections::BTreeMap;

use imaging_tenant_operator::api::condition::Verdict;
use imaging_tenant_operator::api::metadata::TAG_TENANT_UID;
use imaging_tenant_operator::api::{ImagingTenant, KeyStatus};
use imaging_tenant_operator::cloud::{AwsOptions, Cloud, CloudIds, CloudReport, Progress};
use imaging_tenant_operator::config::Settings;
use imaging_tenant_operator::desired::aws::{TenantAws, render_with};
use serde_json::json;

use ito_test_support::faults::{FaultProxy, Mode};
use ito_test_support::{Moto, unique_name};

/// moto's account and region.
pub use ito_test_support::{ACCOUNT_ID as ACCOUNT, REGION};
pub const OPERATOR_ROLE: &str = "arn:aws:iam::123456789012:role/imaging-tenant-operator";
pub const BREAK_GLASS_ROLE: &str = "arn:aws:iam::123456789012:role/ops/break-glass";

/// A tenant as the apiserver would hand it over: a unique name and a fresh UID.
pub fn tenant(prefix: &str, spec: serde_json::Value) -> ImagingTenant {
    let name = unique_name(prefix);
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rand::random::<u32>(),
        rand::random::<u16>(),
        rand::random::<u16>() & 0xfff,
        rand::random::<u16>() & 0xfff,
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    serde_json::from_value(json!({
        "apiVersion": "imaging.tenancy.dev/v1alpha1",
        "kind": "ImagingTenant",
        "metadata": {"name": name, "uid": uid},
        "spec": spec,
    }))
    .expect("a valid ImagingTenant")
}

pub fn uid(tenant: &ImagingTenant) -> &str {
    tenant.metadata.uid.as_deref().expect("a UID")
}

/// Settings of an operator in moto's account. `audit_log_bucket` must exist (see [`audit_bucket`]).
pub fn settings(audit_log_bucket: Option<String>) -> Settings {
    Settings {
        cluster_name: "itest".into(),
        region: REGION.into(),
        partition: "aws".into(),
        account_id: ACCOUNT.into(),
        bucket_prefix: "itest".into(),
        audit_log_bucket,
        oidc_provider_arn: format!(
            "arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE0123456789"
        ),
        operator_role_arn: OPERATOR_ROLE.into(),
        break_glass_role_arn: Some(BREAK_GLASS_ROLE.into()),
        auditor_role_arns: Vec::new(),
        permissions_boundary_arn: format!("arn:aws:iam::{ACCOUNT}:policy/imaging-tenant-boundary"),
        workload_service_account: "imaging-workload".into(),
        s3_vpc_endpoint_ids: Vec::new(),
        replication_region: None,
        allow_replication_opt_out: false,
    }
}

pub fn options(endpoint: &str) -> AwsOptions {
    AwsOptions { region: REGION.into(), endpoint_url: Some(endpoint.into()), ..AwsOptions::default() }
}

/// A fresh `Cloud` on moto, with its own call counts, and plain SDK clients to look at what
/// it did. Both talk to moto through a [`FaultProxy`] in `Clean` mode, which only mends moto's
/// GetBucketVersioning answer (see `ito_test_support::faults`).
pub struct TestAws {
    pub cloud: Cloud,
    pub iam: aws_sdk_iam::Client,
    pub kms: aws_sdk_kms::Client,
    pub s3: aws_sdk_s3::Client,
    pub proxy: FaultProxy,
    /// The plain clients' proxy.
    _clean: FaultProxy,
}

pub async fn connect(moto: &Moto) -> TestAws {
    connect_with(moto, Mode::Clean).await
}

pub async fn connect_with(moto: &Moto, mode: Mode) -> TestAws {
    let proxy = FaultProxy::start(moto.endpoint_url(), mode).await;
    let clean = FaultProxy::start(moto.endpoint_url(), Mode::Clean).await;
    let config = moto.sdk_config().to_builder().endpoint_url(clean.endpoint_url()).build();
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    TestAws {
        cloud: Cloud::from_sdk_config(&moto.sdk_config(), &options(proxy.endpoint_url())),
        iam: aws_sdk_iam::Client::new(&config),
        kms: aws_sdk_kms::Client::new(&config),
        s3,
        proxy,
        _clean: clean,
    }
}

/// An audit bucket whose policy lets S3 log delivery write into it (moto checks that).
pub async fn audit_bucket(moto: &Moto) -> String {
    let name = unique_name("itest-audit");
    let s3 = moto.s3_client();
    s3.create_bucket().bucket(&name).send().await.expect("create the audit bucket");
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "S3ServerAccessLogs",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": ["s3:PutObject"],
            "Resource": format!("arn:aws:s3:::{name}/*"),
        }]
    });
    s3.put_bucket_policy().bucket(&name).policy(policy.to_string()).send().await.expect("audit bucket policy");
    let blocked = aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    s3.put_public_access_block().bucket(&name).public_access_block_configuration(blocked).send().await.unwrap();
    name
}

/// Provisions and returns the report; the IDs recorded along the way are in `progress`.
pub async fn provision(
    cloud: &Cloud,
    tenant: &ImagingTenant,
    settings: &Settings,
    progress: &mut KeepIds,
) -> CloudReport {
    let known = progress.ids.clone();
    cloud.provision(tenant, settings, &known, progress).await
}

pub fn all_ok(report: &CloudReport) -> bool {
    report.verdicts.len() == 4 && report.verdicts.iter().all(|v| v.ok)
}

pub fn verdicts(report: &CloudReport) -> String {
    report
        .verdicts
        .iter()
        .map(|v: &Verdict| format!("{}={} {}: {}", v.type_, v.ok, v.reason, v.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the tenant should have, with its live key's ARN.
pub fn desired(tenant: &ImagingTenant, settings: &Settings, ids: &CloudIds) -> TenantAws {
    render_with(tenant, settings, ids.key.as_ref().map(|k: &KeyStatus| k.arn.as_str()))
}

/// What moto holds for a tenant: roles, keys (not pending deletion), aliases and buckets
/// carrying its UID.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub roles: Vec<String>,
    pub keys: Vec<String>,
    pub aliases: Vec<String>,
    pub buckets: Vec<String>,
}

pub async fn census(moto: &Moto, tenant_uid: &str) -> Census {
    census_in(moto, tenant_uid, REGION).await
}

/// The census of one region: keys, aliases and buckets there (roles are global).
pub async fn census_in(moto: &Moto, tenant_uid: &str, region: &str) -> Census {
    let config = in_region(moto, region);
    let iam = aws_sdk_iam::Client::new(&config);
    let kms = aws_sdk_kms::Client::new(&config);
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let mut census = Census::default();

    let roles = iam.list_roles().path_prefix("/imaging-tenants/").max_items(1000).send().await.expect("list roles");
    for role in roles.roles() {
        // moto is shared with the binary's other tests: a role of theirs may be deleted between
        // the listing and this read.
        let tags = match iam.list_role_tags().role_name(role.role_name()).send().await {
            Ok(tags) => tags,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => continue,
            Err(e) => panic!("role tags: {e:?}"),
        };
        if tags.tags().iter().any(|t| t.key() == TAG_TENANT_UID && t.value() == tenant_uid) {
            census.roles.push(role.role_name().to_string());
        }
    }

    let mut tenant_keys = BTreeMap::new();
    let keys = kms.list_keys().limit(1000).send().await.expect("list keys");
    for key in keys.keys() {
        let id = key.key_id().unwrap_or_default();
        let tags = kms.list_resource_tags().key_id(id).send().await.expect("key tags");
        if tags.tags().iter().any(|t| t.tag_key() == TAG_TENANT_UID && t.tag_value() == tenant_uid) {
            let state = kms.describe_key().key_id(id).send().await.expect("describe key");
            let state = state.key_metadata().and_then(|m| m.key_state()).map(|s| s.as_str().to_string());
            tenant_keys.insert(id.to_string(), state.unwrap_or_default());
        }
    }
    census.keys = tenant_keys.iter().filter(|(_, s)| *s != "PendingDeletion").map(|(id, _)| id.clone()).collect();
    let aliases = kms.list_aliases().limit(100).send().await.expect("list aliases");
    let mut all_aliases = aliases.aliases().to_vec();
    let mut marker = aliases.next_marker().map(str::to_string);
    while let Some(m) = marker.take() {
        let page = kms.list_aliases().limit(100).marker(m).send().await.expect("list aliases");
        all_aliases.extend(page.aliases().iter().cloned());
        marker = page.next_marker().map(str::to_string);
    }
    census.aliases = all_aliases
        .iter()
        .filter(|a| a.target_key_id().is_some_and(|k| tenant_keys.contains_key(k)))
        .filter_map(|a| a.alias_name().map(str::to_string))
        .collect();

    let buckets = s3.list_buckets().send().await.expect("list buckets");
    for bucket in buckets.buckets() {
        let name = bucket.name().unwrap_or_default();
        let Ok(location) = s3.get_bucket_location().bucket(name).send().await else { continue };
        let location = location.location_constraint().map(|c| c.as_str().to_string()).unwrap_or_default();
        if location != region && !(location.is_empty() && region == "us-east-1") {
            continue;
        }
        let Ok(tags) = s3.get_bucket_tagging().bucket(name).send().await else { continue };
        if tags.tag_set().iter().any(|t| t.key() == TAG_TENANT_UID && t.value() == tenant_uid) {
            census.buckets.push(name.to_string());
        }
    }
    census
}

/// moto's SDK configuration with another region (moto keeps KMS keys per region).
pub fn in_region(moto: &Moto, region: &str) -> aws_config::SdkConfig {
    moto.sdk_config().to_builder().region(aws_config::Region::new(region.to_string())).build()
}

/// Writes an object into a tenant bucket. moto evaluates Deny statements of bucket policies for
/// object writes without the request context our policy's conditions need (TLS, principal ARN),
/// so it would refuse this upload: the policy is removed first (the next provision restores it).
pub async fn put_object_without_policy(moto: &Moto, bucket: &str, key: &str) {
    let s3 = moto.s3_client();
    s3.delete_bucket_policy().bucket(bucket).send().await.expect("remove the bucket policy");
    s3.put_object().bucket(bucket).key(key).body(b"DICM".to_vec().into()).send().await.expect("put an object");
}

/// A [`Progress`] that keeps the last IDs in memory (the status of a tenant that is not stored).
#[derive(Clone, Debug, Default)]
pub struct KeepIds {
    pub ids: CloudIds,
    pub records: usize,
}

#[async_trait::async_trait]
impl Progress for KeepIds {
    async fn record(&mut self, ids: &CloudIds) -> Result<(), String> {
        self.ids = ids.clone();
        self.records += 1;
        Ok(())
    }
}

/// Default encryption with S3's own keys (SSE-S3) instead of the tenant's KMS key: what drift
/// tests put on a tenant bucket.
pub fn s3_managed_encryption() -> aws_sdk_s3::types::ServerSideEncryptionConfiguration {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
        .unwrap()
}
