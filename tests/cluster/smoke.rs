//! The real parts behave as the operator's tests rely on: the API server validates, applies and
//! authorizes like a cluster; the controller manager finalizes namespaces and collects garbage;
//! moto answers the S3, KMS, IAM and STS calls the operator makes.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use ito_test_support::{ControlPlane, Moto, api_error_code, create_namespace, unique_name, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Long enough for the controller manager's informers to sync on a loaded 2-core machine.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(120);
const API_TIMEOUT: Duration = Duration::from_secs(30);

fn config_map(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": data,
    }))
    .expect("a valid ConfigMap")
}

#[tokio::test]
async fn crd_validation_rule_rejects_bad_objects_with_its_message() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let client = cp.client();
    let ns = create_namespace(&client, "smoke-crd").await;
    let group = format!("{}.smoke.test", unique_name("g"));
    let rule_message = "minReplicas must not exceed replicas";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["replicas"],
                        "properties": {
                            "replicas": { "type": "integer", "minimum": 0 },
                            "minReplicas": { "type": "integer", "minimum": 0 },
                        },
                        "x-kubernetes-validations": [{
                            "rule": "!has(self.minReplicas) || self.minReplicas <= self.replicas",
                            "message": rule_message,
                        }],
                    }},
                }},
            }],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.context("create the CRD")?;

    let established = |crd: &CustomResourceDefinition| {
        crd.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    };
    let crd_name = crd.name_any();
    wait_for(API_TIMEOUT, "the CRD to be Established", || async {
        let crd = crds.get(&crd_name).await.map_err(|e| e.to_string())?;
        if established(&crd) { Ok(()) } else { Err(format!("status {:?}", crd.status)) }
    })
    .await;

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let widget =
        |name: &str, spec: serde_json::Value| DynamicObject::new(name, &resource).data(json!({ "spec": spec }));

    let bad = widgets
        .create(&PostParams::default(), &widget("bad", json!({ "replicas": 1, "minReplicas": 3 })))
        .await
        .expect_err("the validation rule must reject minReplicas > replicas");
    ensure!(api_error_code(&bad) == Some(422), "expected 422 Invalid, got {bad}");
    ensure!(bad.to_string().contains(rule_message), "expected the rule's message in {bad}");

    let negative = widgets
        .create(&PostParams::default(), &widget("negative", json!({ "replicas": -1 })))
        .await
        .expect_err("the schema minimum must reject negative replicas");
    ensure!(api_error_code(&negative) == Some(422), "expected 422 Invalid, got {negative}");

    let good = widgets
        .create(&PostParams::default(), &widget("good", json!({ "replicas": 3, "minReplicas": 1 })))
        .await
        .context("create a valid widget")?;
    ensure!(good.data["spec"]["replicas"] == 3);

    crds.delete(&crd_name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers_until_forced() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let ns = create_namespace(&cp.client(), "smoke-ssa").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cp.client(), &ns);
    let colored = |color: &str| Patch::Apply(config_map("paint", json!({ "color": color })));

    config_maps
        .patch("paint", &PatchParams::apply("smoke-first"), &colored("red"))
        .await
        .context("first manager applies")?;

    let conflict = config_maps
        .patch("paint", &PatchParams::apply("smoke-second"), &colored("blue"))
        .await
        .expect_err("a second manager setting the same field must conflict");
    ensure!(api_error_code(&conflict) == Some(409), "expected 409 Conflict, got {conflict}");
    let message = conflict.to_string();
    ensure!(
        message.contains("smoke-first") && message.contains(".data.color"),
        "the conflict should name the other manager and the field: {message}"
    );

    let forced = config_maps
        .patch("paint", &PatchParams::apply("smoke-second").force(), &colored("blue"))
        .await
        .context("second manager forces")?;
    ensure!(forced.data.as_ref().and_then(|d| d.get("color")).map(String::as_str) == Some("blue"));
    let owns_color = |manager: &str| {
        forced.managed_fields().iter().any(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.fields_v1.as_ref().is_some_and(|f| f.0.to_string().contains("f:color"))
        })
    };
    ensure!(owns_color("smoke-second"), "smoke-second should own .data.color now");
    ensure!(!owns_color("smoke-first"), "smoke-first should have lost .data.color");
    Ok(())
}

#[tokio::test]
async fn deleted_namespace_is_finalized_and_disappears() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let client = cp.client();
    let ns = create_namespace(&client, "smoke-nsdel").await;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map("content", json!({ "k": "v" })))
        .await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let finalizers = namespaces.get(&ns).await?.spec.and_then(|s| s.finalizers).unwrap_or_default();
    ensure!(
        finalizers == ["kubernetes"],
        "only the namespace controller can remove this finalizer, got {finalizers:?}"
    );

    namespaces.delete(&ns, &DeleteParams::default()).await?;
    wait_for(CONTROLLER_TIMEOUT, &format!("namespace {ns} to be finalized and removed"), || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(namespace)) => Err(format!("still there: {:?}", namespace.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn dependent_is_garbage_collected_after_its_owner_is_deleted() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let ns = create_namespace(&cp.client(), "smoke-gc").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cp.client(), &ns);

    let owner = config_maps.create(&PostParams::default(), &config_map("owner", json!({}))).await?;
    let mut dependent = config_map("dependent", json!({}));
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.name_any(),
        "uid": owner.uid().context("owner has a uid")?,
    }))?]);
    config_maps.create(&PostParams::default(), &dependent).await?;

    config_maps.delete("owner", &DeleteParams::background()).await?;
    wait_for(CONTROLLER_TIMEOUT, "the dependent ConfigMap to be garbage-collected", || async {
        match config_maps.get_opt("dependent").await {
            Ok(None) => Ok(()),
            Ok(Some(cm)) => Err(format!("still there, ownerReferences {:?}", cm.metadata.owner_references)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn watch_sees_added_modified_deleted() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let ns = create_namespace(&cp.client(), "smoke-watch").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cp.client(), &ns);

    // Watching from the list's resourceVersion delivers every later change, however late the
    // watch connection is established.
    let version = config_maps
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list has a resourceVersion")?;
    let params = WatchParams::default().fields("metadata.name=watched").timeout(60);
    let mut events = config_maps.watch(&params, &version).await?.boxed();

    config_maps.create(&PostParams::default(), &config_map("watched", json!({ "step": "1" }))).await?;
    config_maps.patch("watched", &PatchParams::default(), &Patch::Merge(json!({ "data": { "step": "2" } }))).await?;
    config_maps.delete("watched", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    while seen.last().is_none_or(|(kind, _): &(&str, String)| *kind != "Deleted") {
        let event = tokio::time::timeout(API_TIMEOUT, events.try_next())
            .await
            .with_context(|| format!("no further watch event after {seen:?}"))??
            .with_context(|| format!("watch ended after {seen:?}"))?;
        let step = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("step")).cloned().unwrap_or_default();
        match event {
            WatchEvent::Added(cm) => seen.push(("Added", step(&cm))),
            WatchEvent::Modified(cm) => seen.push(("Modified", step(&cm))),
            WatchEvent::Deleted(cm) => seen.push(("Deleted", step(&cm))),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => bail!("watch error {status:?} after {seen:?}"),
        }
    }
    let expected = [("Added", "1"), ("Modified", "2"), ("Deleted", "2")];
    ensure!(seen.iter().map(|(k, s)| (*k, s.as_str())).eq(expected), "expected {expected:?}, saw {seen:?}");
    Ok(())
}

#[tokio::test]
async fn rbac_denies_a_user_until_bound_to_view_which_allows_list_but_not_create() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let ns = create_namespace(&cp.client(), "smoke-rbac").await;
    let user = unique_name("smoke-user");
    let as_user: Api<ConfigMap> = Api::namespaced(cp.client_as(&user, &[]), &ns);
    let note = config_map("note", json!({}));

    let denied = as_user.list(&ListParams::default()).await.expect_err("list without a binding");
    ensure!(api_error_code(&denied) == Some(403), "expected 403 Forbidden, got {denied}");
    let denied = as_user.create(&PostParams::default(), &note).await.expect_err("create without a binding");
    ensure!(api_error_code(&denied) == Some(403), "expected 403 Forbidden, got {denied}");

    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "smoke-view" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))?;
    Api::<RoleBinding>::namespaced(cp.client(), &ns).create(&PostParams::default(), &binding).await?;

    // The authorizer reads bindings from an informer, so the grant takes effect shortly after.
    wait_for(API_TIMEOUT, "the view binding to allow listing", || async {
        as_user.list(&ListParams::default()).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let denied = as_user.create(&PostParams::default(), &note).await.expect_err("view must not create");
    ensure!(api_error_code(&denied) == Some(403), "expected 403 Forbidden, got {denied}");
    Ok(())
}

#[tokio::test]
async fn kubeconfig_file_reaches_the_api_server_as_admin() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let file = kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;

    let version = client.apiserver_version().await?;
    ensure!(version.git_version == "v1.37.2", "API server version {}", version.git_version);
    let namespaces = Api::<Namespace>::all(client).list(&ListParams::default()).await?;
    ensure!(namespaces.iter().any(|ns| ns.name_any() == "kube-system"));
    Ok(())
}

#[tokio::test]
async fn moto_serves_kms_s3_iam_and_sts() -> Result<()> {
    let moto = Moto::shared().await;
    let sdk = moto.sdk_config();

    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms
        .create_key()
        .description("smoke test key")
        .send()
        .await?
        .key_metadata
        .context("CreateKey returns key metadata")?;
    kms.enable_key_rotation().key_id(key.key_id()).send().await?;
    let rotation = kms.get_key_rotation_status().key_id(key.key_id()).send().await?;
    ensure!(rotation.key_rotation_enabled(), "key rotation should be enabled");
    let key_arn = key.arn().context("the key has an ARN")?;

    use aws_sdk_s3::types::{
        PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
        ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    };
    let s3 = moto.s3_client();
    let bucket = unique_name("smoke-bucket");
    s3.create_bucket().bucket(&bucket).send().await?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::AwsKms)
                        .kms_master_key_id(key_arn)
                        .build()?,
                )
                .bucket_key_enabled(true)
                .build(),
        )
        .build()?;
    s3.put_bucket_encryption().bucket(&bucket).server_side_encryption_configuration(encryption).send().await?;
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    s3.put_public_access_block().bucket(&bucket).public_access_block_configuration(block).send().await?;

    let encryption = s3.get_bucket_encryption().bucket(&bucket).send().await?;
    let rules =
        encryption.server_side_encryption_configuration().context("bucket has an encryption configuration")?.rules();
    ensure!(rules.len() == 1, "one encryption rule, got {rules:?}");
    let default = rules[0].apply_server_side_encryption_by_default().context("rule has a default encryption")?;
    ensure!(default.sse_algorithm() == &ServerSideEncryption::AwsKms);
    ensure!(default.kms_master_key_id() == Some(key_arn));
    ensure!(rules[0].bucket_key_enabled() == Some(true), "bucket key: {:?}", rules[0]);

    let block = s3.get_public_access_block().bucket(&bucket).send().await?;
    let block = block.public_access_block_configuration().context("bucket has a public access block")?;
    ensure!(block.block_public_acls() == Some(true));
    ensure!(block.ignore_public_acls() == Some(true));
    ensure!(block.block_public_policy() == Some(true));
    ensure!(block.restrict_public_buckets() == Some(true));

    let iam = aws_sdk_iam::Client::new(&sdk);
    let role_name = unique_name("smoke-role");
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example.test" },
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": { "StringEquals": { "oidc.example.test:sub": "system:serviceaccount:imaging:reader" } },
        }],
    });
    iam.create_role().role_name(&role_name).assume_role_policy_document(trust.to_string()).send().await?;
    let role = iam.get_role().role_name(&role_name).send().await?.role.context("GetRole returns the role")?;
    // IAM returns policy documents URL-encoded, and with its own key order and spacing.
    let document = role.assume_role_policy_document().context("the role has a trust policy")?;
    let read_back: serde_json::Value = serde_json::from_str(&urlencoding::decode(document)?)?;
    ensure!(read_back == trust, "trust policy read back as {read_back}");

    let identity = aws_sdk_sts::Client::new(&sdk).get_caller_identity().send().await?;
    ensure!(identity.account() == Some("123456789012"), "account {:?}", identity.account());
    Ok(())
}
