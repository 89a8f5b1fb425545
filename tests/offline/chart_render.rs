//! The Helm chart and the plain manifests, rendered without a cluster: `helm lint`, `helm
//! template` with default and non-default values, the values schema, the CRD copies, and
//! deploy/ against what the chart renders.

use std::collections::BTreeSet;

use ito_test_support::chart::*;
use ito_test_support::{repo_root, scratch_dir};
use serde_json::{Value, json};

fn lint(binary: &str, args: &[&str]) {
    let mut cmd = helm_named(binary);
    cmd.args(["lint", "--strict", CHART]).args(args);
    let out = run(cmd, None);
    assert!(out.contains("0 chart(s) failed"), "{binary}: {out}");
}

#[test]
fn helm_lint_passes_with_minimal_and_full_values() {
    for binary in HELMS {
        lint(binary, &["--values", MINIMAL_VALUES]);
        // lint knows no ServiceMonitor kind; the rendering tests cover it.
        lint(binary, &["--values", FULL_VALUES, "--set", "metrics.serviceMonitor.enabled=false"]);
    }
}

/// Helm 4 renders every object Helm 3 does, identically (comments aside), with every optional
/// part of the chart on.
#[test]
fn helm4_renders_what_helm3_renders() {
    let render = |binary: &str| {
        let mut cmd = helm_template_command_of(binary);
        cmd.args(["ito", CHART, "--namespace", "imaging-system", "--values", FULL_VALUES])
            .args(["--api-versions", SERVICE_MONITOR_API, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"])
            .args(["--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true,crds.enabled=true"]);
        documents(&run(cmd, None))
    };
    let (three, four) = (render("helm"), render("helm4"));
    let names = |docs: &[Value]| docs.iter().map(|d| format!("{} {}", kind_of(d), name_of(d))).collect::<Vec<_>>();
    assert_eq!(names(&three), names(&four), "the same objects in the same order");
    for (a, b) in three.iter().zip(&four) {
        assert_eq!(a, b, "{} {} differs between Helm 3 and Helm 4", kind_of(a), name_of(a));
    }
}

#[test]
fn default_render_is_the_production_shape() {
    let docs = documents(&helm_template(&["ito", CHART, "--namespace", "imaging-system", "--values", MINIMAL_VALUES]));
    let kinds: BTreeSet<&str> = docs.iter().map(kind_of).collect();
    let expected: BTreeSet<&str> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .into();
    assert_eq!(kinds, expected, "kinds rendered by default (the CRD is in crds/, never a template)");
    for doc in &docs {
        if kind_of(doc).starts_with("Cluster") || kind_of(doc).starts_with("ValidatingAdmissionPolicy") {
            continue;
        }
        assert_eq!(doc["metadata"]["namespace"], "imaging-system", "{} {} namespace", kind_of(doc), name_of(doc));
    }

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "ito-imaging-tenant-operator");
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert!(sc.get("runAsUser").is_none(), "the user is the pod's, set once: {sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert_eq!(container["args"], json!(["run"]));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "health"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "health"}));
    let ports: Vec<(String, i64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("metrics".to_owned(), 8080), ("health".to_owned(), 8081)]);
    assert!(container["resources"]["requests"]["memory"].is_string(), "resources: {}", container["resources"]);
    assert!(container["resources"]["limits"]["memory"].is_string(), "resources: {}", container["resources"]);
    let env = &container["env"];
    assert_eq!(env[0], json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}));
    assert_eq!(
        env[1],
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    );
    assert_eq!(container["envFrom"], json!([{"configMapRef": {"name": "ito-imaging-tenant-operator"}}]));
    let spread = pod["topologySpreadConstraints"].as_array().expect("topologySpreadConstraints");
    let keys: Vec<&str> = spread.iter().map(|c| c["topologyKey"].as_str().unwrap()).collect();
    assert_eq!(keys, ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]);
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string(),
        "pods roll when the configuration changes"
    );

    let config = &one(&docs, "ConfigMap")["data"];
    assert_eq!(config["ITO_CLUSTER_NAME"], "prod-1");
    assert_eq!(config["ITO_LEADER_ELECTION"], "true");
    assert_eq!(config["ITO_LEADER_ELECTION_NAMESPACE"], "imaging-system");
    assert_eq!(config["ITO_LEADER_ELECTION_LEASE"], "ito-imaging-tenant-operator");
    assert_eq!(config["ITO_METRICS_ADDR"], "0.0.0.0:8080");
    assert_eq!(config["ITO_HEALTH_ADDR"], "0.0.0.0:8081");
    assert_eq!(config["ITO_PERMISSIONS_BOUNDARY_ARN"], "arn:aws:iam::111122223333:policy/imaging-tenant-boundary");
    assert_eq!(config["ITO_ALLOW_NO_BREAK_GLASS_ROLE"], "false");
    for optional in ["ITO_AWS_ENDPOINT_URL", "ITO_AUDIT_LOG_BUCKET", "ITO_TENANT_SELECTOR"] {
        assert!(config.get(optional).is_none(), "{optional} is unset by default, not empty");
    }

    let sa = one(&docs, "ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/imaging-tenant-operator"
    );

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let policy = &one(&docs, "NetworkPolicy")["spec"];
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["ingress"], json!([]), "no scrape source is assumed: nobody may connect");
    for rule in &policy["egress"].as_array().unwrap()[1..] {
        assert_eq!(
            rule["to"],
            json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]),
            "egress to the API server and AWS, IPv4 and IPv6, until narrowed"
        );
    }
    let egress_ports: BTreeSet<i64> = policy["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter().map(|p| p["port"].as_i64().unwrap()))
        .collect();
    assert_eq!(egress_ports, [53, 443, 6443].into(), "egress: DNS, the API server and AWS only");

    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
}

#[test]
fn cluster_role_is_least_privilege() {
    let docs = documents(&helm_template(&["ito", CHART, "--namespace", "imaging-system", "--values", MINIMAL_VALUES]));
    let rules = named(&docs, "ClusterRole", "ito-imaging-tenant-operator")["rules"].as_array().unwrap().clone();
    let mut granted = BTreeSet::new();
    for rule in &rules {
        let list = |key: &str| -> Vec<String> {
            rule[key].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
        };
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            assert!(!list(field).iter().any(|v| v.contains('*')), "wildcard in {rule}");
        }
        assert!(rule.get("nonResourceURLs").is_none(), "non-resource URLs in {rule}");
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.insert((group.clone(), resource.clone(), verb, list("resourceNames")));
                }
            }
        }
    }
    let forbidden_resources =
        ["secrets", "pods", "pods/exec", "configmaps", "deployments", "clusterrolebindings", "roles"];
    for (group, resource, verb, names) in &granted {
        assert!(!forbidden_resources.contains(&resource.as_str()), "grants {verb} on {resource}");
        assert!(
            !["escalate", "impersonate", "deletecollection"].contains(&verb.as_str()),
            "grants {verb} on {resource}"
        );
        if verb == "bind" {
            assert_eq!((group.as_str(), resource.as_str()), ("rbac.authorization.k8s.io", "clusterroles"));
            assert_eq!(names, &["admin", "edit", "view"], "bind only on admin, edit, view");
        }
        if resource == "clusterroles" {
            assert_eq!(verb, "bind", "only bind on clusterroles");
        }
    }
    let manages = ["namespaces", "serviceaccounts", "resourcequotas", "limitranges", "networkpolicies", "rolebindings"];
    for resource in manages {
        let verbs: BTreeSet<&str> =
            granted.iter().filter(|(_, r, _, _)| r == resource).map(|(_, _, v, _)| v.as_str()).collect();
        assert_eq!(verbs, ["create", "delete", "get", "list", "patch", "watch"].into(), "verbs on {resource}");
    }
    for resource in ["imagingtenants", "imagingtenants/status", "imagingtenants/finalizers"] {
        let verbs: BTreeSet<&str> =
            granted.iter().filter(|(_, r, _, _)| r == resource).map(|(_, _, v, _)| v.as_str()).collect();
        assert_eq!(verbs, ["get", "list", "patch", "update", "watch"].into(), "verbs on {resource}");
    }
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "imaging-system");
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["resources"], json!(["leases"]), "the Role is for the Lease only");
        if rule["verbs"] != json!(["create"]) {
            assert_eq!(rule["resourceNames"], json!(["ito-imaging-tenant-operator"]));
        }
    }
}

#[test]
fn full_values_reach_every_object() {
    let docs = documents(&helm_template(&[
        "ito",
        CHART,
        "--namespace",
        "imaging-system",
        "--values",
        FULL_VALUES,
        "--api-versions",
        SERVICE_MONITOR_API,
    ]));
    for doc in &docs {
        assert!(
            name_of(doc).starts_with("imaging-shard-a"),
            "fullnameOverride names {} {}",
            kind_of(doc),
            name_of(doc)
        );
    }
    let config = &one(&docs, "ConfigMap")["data"];
    let expected = json!({
        "ITO_CLUSTER_NAME": "prod-eu-1",
        "ITO_AWS_REGION": "eu-central-1",
        "ITO_OIDC_PROVIDER_ARN": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
        "ITO_OPERATOR_ROLE_ARN": "arn:aws:iam::111122223333:role/imaging-tenant-operator",
        "ITO_AWS_ENDPOINT_URL": "https://vpce-0123456789abcdef0.s3.eu-central-1.vpce.amazonaws.com",
        "ITO_BUCKET_PREFIX": "acme-img",
        "ITO_AUDIT_LOG_BUCKET": "acme-imaging-audit-logs",
        "ITO_BREAK_GLASS_ROLE_ARN": "arn:aws:iam::111122223333:role/imaging-break-glass",
        "ITO_ALLOW_NO_BREAK_GLASS_ROLE": "true",
        "ITO_PERMISSIONS_BOUNDARY_ARN": "arn:aws:iam::111122223333:policy/platform/imaging-tenant-boundary",
        "ITO_WORKLOAD_SERVICE_ACCOUNT": "dicom-workload",
        "ITO_REPLICATION_REGION": "eu-west-1",
        "ITO_ALLOW_REPLICATION_OPT_OUT": "true",
        "ITO_RESYNC_INTERVAL": "5m",
        "ITO_CONCURRENCY": "16",
        "ITO_AWS_MAX_CREATE_KEY_PER_SECOND": "2",
        "ITO_AWS_BUDGET": "iam:write=2,kms:read=20.5",
        "ITO_TENANT_SELECTOR": "imaging.tenancy.dev/shard=a",
        "ITO_CLUSTER_NETWORK_POLICY_KIND": "ClusterNetworkPolicy",
        "ITO_ALLOW_UNGUARDED": "false",
        "ITO_LOG_LEVEL": "imaging_tenant_operator=debug,kube=info",
        "ITO_LOG_FORMAT": "text",
        "ITO_METRICS_ADDR": "0.0.0.0:9090",
        "ITO_HEALTH_ADDR": "0.0.0.0:9091",
        "ITO_LEADER_ELECTION": "true",
        "ITO_LEADER_ELECTION_NAMESPACE": "imaging-leases",
        "ITO_LEADER_ELECTION_LEASE": "imaging-shard-a",
        "ITO_LEADER_ELECTION_LEASE_SECONDS": "30",
    });
    assert_eq!(config, &expected);

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["example.com/shard"], "a");
    assert_eq!(pod["metadata"]["annotations"]["example.com/team"], "platform");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "imaging-shard-a-operator");
    assert_eq!(spec["terminationGracePeriodSeconds"], 120);
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry-credentials"}]));
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert!(spec["affinity"]["nodeAffinity"].is_object());
    assert_eq!(spec["topologySpreadConstraints"].as_array().unwrap().len(), 1);
    assert_eq!(spec["topologySpreadConstraints"][0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spec["topologySpreadConstraints"][0]["maxSkew"], 2);
    let container = &spec["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/platform/imaging-tenant-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["limits"]["cpu"], "1");
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    assert_eq!(container["ports"][1]["containerPort"], 9091);

    let sa = one(&docs, "ServiceAccount");
    assert_eq!(name_of(sa), "imaging-shard-a-operator");
    assert_eq!(
        sa["metadata"]["annotations"],
        json!({
            "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/imaging-tenant-operator-shard-a",
            "example.com/owner": "platform",
        })
    );
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "imaging-leases", "the Lease's Role lives beside the Lease");
    assert_eq!(role["rules"][0]["resourceNames"], json!(["imaging-shard-a"]));
    assert_eq!(one(&docs, "RoleBinding")["metadata"]["namespace"], "imaging-leases");
    assert_eq!(
        one(&docs, "ClusterRoleBinding")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "imaging-shard-a-operator", "namespace": "imaging-system"}])
    );
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 2);
    assert_eq!(one(&docs, "ClusterRole")["metadata"]["name"], "imaging-shard-a", "a shard creates no user roles");
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["example.com/cost-center"],
            "radiology",
            "commonLabels on {}",
            kind_of(doc)
        );
    }
    assert_eq!(pod["metadata"]["labels"]["example.com/cost-center"], "radiology", "commonLabels on the pods");
    assert_eq!(container["args"], json!(["run", "--log-level=imaging_tenant_operator=trace"]));
    assert_eq!(container["env"][2], json!({"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}));
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/ssl/corporate");
    assert_eq!(spec["volumes"], json!([{"name": "corporate-ca", "configMap": {"name": "corporate-ca"}}]));
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(
        monitor["spec"]["endpoints"][0],
        json!({"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"})
    );
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/scrape"], "true");

    let policy = &one(&docs, "NetworkPolicy")["spec"];
    assert_eq!(
        policy["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["monitoring", "observability"])
    );
    assert_eq!(policy["ingress"][0]["from"][1]["ipBlock"], json!({"cidr": "fd00:10::/64"}));
    let ingress_ports: Vec<&Value> =
        policy["ingress"][0]["ports"].as_array().unwrap().iter().map(|p| &p["port"]).collect();
    assert_eq!(ingress_ports, [&json!("metrics"), &json!("health")]);
    assert_eq!(policy["egress"][0]["to"][0]["podSelector"]["matchLabels"], json!({"k8s-app": "coredns"}));
    assert_eq!(
        policy["egress"][1]["to"],
        json!([{"ipBlock": {"cidr": "10.100.0.0/16"}}, {"ipBlock": {"cidr": "fd00:10:100::/64"}}])
    );
    assert_eq!(policy["egress"][2]["to"], json!([{"ipBlock": {"cidr": "10.20.0.0/16"}}]));
}

#[test]
fn optional_objects_can_be_turned_off() {
    let docs = documents(&helm_template(&[
        "ito",
        CHART,
        "--values",
        MINIMAL_VALUES,
        "--set",
        "networkPolicy.enabled=false,podDisruptionBudget.enabled=false,metrics.service.enabled=false,leaderElection.enabled=false,topologySpread.enabled=false,admission.enabled=false",
    ]));
    let kinds: BTreeSet<&str> = docs.iter().map(kind_of).collect();
    assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "ServiceAccount"].into());
    assert_eq!(one(&docs, "ConfigMap")["data"]["ITO_LEADER_ELECTION"], "false");
    assert!(one(&docs, "Deployment")["spec"]["template"]["spec"].get("topologySpreadConstraints").is_none());
}

/// The admission policies (invariants 10 and 11): six, each bound with Deny in every namespace by
/// default, the operator named by its ServiceAccount, nobody else exempt unless configured.
#[test]
fn admission_policies_deny_by_default_and_name_exactly_the_exempt_identities() {
    let docs = documents(&helm_template(&["ito", CHART, "--namespace", "imaging-system", "--values", MINIMAL_VALUES]));
    let policies: Vec<&Value> = docs.iter().filter(|d| kind_of(d) == "ValidatingAdmissionPolicy").collect();
    let bindings: Vec<&Value> = docs.iter().filter(|d| kind_of(d) == "ValidatingAdmissionPolicyBinding").collect();
    let names: BTreeSet<&str> = policies.iter().map(|p| name_of(p)).collect();
    let expected: BTreeSet<String> = [
        "operator-owned",
        "tenant-namespaces",
        "tenant-network-policies",
        "tenant-role-bindings",
        "tenant-irsa",
        "operator-confined",
    ]
    .iter()
    .map(|n| format!("ito-imaging-tenant-operator-{n}"))
    .collect();
    assert_eq!(names, expected.iter().map(String::as_str).collect());
    for policy in &policies {
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{}", name_of(policy));
    }
    assert_eq!(bindings.len(), 6);
    for binding in &bindings {
        assert!(names.contains(binding["spec"]["policyName"].as_str().unwrap()));
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(binding["spec"]["matchResources"]["namespaceSelector"], json!({}), "every namespace by default");
    }
    let text = serde_json::to_string(&policies).unwrap();
    assert!(
        text.contains(
            r#"request.userInfo.username in [\"system:serviceaccount:imaging-system:ito-imaging-tenant-operator\"]"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"g in []"#), "no break-glass group by default");
    assert!(text.contains("system:serviceaccount:kube-system:namespace-controller"));
    assert!(text.contains("system:serviceaccount:kube-system:generic-garbage-collector"));
    assert!(!text.contains("system:masters"), "cluster admins are not exempt");

    let docs = documents(&helm_template(&[
        "ito",
        CHART,
        "--namespace",
        "imaging-system",
        "--values",
        MINIMAL_VALUES,
        "--set",
        "admission.breakGlassGroups={platform:break-glass},admission.namespaceSelector.matchLabels.guarded=yes",
    ]));
    let text = serde_json::to_string(&docs).unwrap();
    assert!(text.contains(r#"g in [\"platform:break-glass\"]"#), "{text}");
    let binding = docs.iter().find(|d| kind_of(d) == "ValidatingAdmissionPolicyBinding").unwrap();
    assert_eq!(binding["spec"]["matchResources"]["namespaceSelector"], json!({"matchLabels": {"guarded": "yes"}}));
}

/// Renders with `values` (YAML) and returns helm's error output; panics if it rendered.
fn rejected(values: &str, extra: &[&str]) -> String {
    let dir = scratch_dir("values");
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let mut cmd = helm_template_command();
    cmd.args(["ito", CHART, "--values"]).arg(&file).args(extra);
    let out = output(cmd, None);
    assert!(!out.status.success(), "helm rendered values it should reject:\n{values}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn schema_rejects_invalid_values_with_clear_messages() {
    let message = rejected("{}", &[]);
    assert!(
        message.contains("missing properties 'clusterName', 'awsRegion', 'oidcProviderArn', 'operatorRoleArn'"),
        "missing required values are named: {message}"
    );

    let invalid = r#"
clustername: prod-1            # misspelt
awsRegion: us-east-1
oidcProviderArn: arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X
operatorRoleArn: imaging-tenant-operator
permissionsBoundaryArn: arn:aws:iam::111122223333:policy/imaging-tenant-boundary
breakGlassRoleArn: arn:aws:iam::111122223333:role/imaging-break-glass
concurrency: "8"
logFormat: xml
resyncInterval: 0s
leaderElection:
  enable: true
networkPolicy:
  aws:
    cidrs: [everywhere]
  apiServer:
    cidrs: ["fd00::/129"]
"#;
    let message = rejected(invalid, &[]);
    for expected in [
        "values don't meet the specifications of the schema",
        "missing property 'clusterName'",
        "additional properties 'clustername' not allowed",
        "at '/operatorRoleArn': 'imaging-tenant-operator' does not match pattern",
        "at '/concurrency': got string, want integer",
        "at '/logFormat': value must be one of 'text', 'json'",
        "at '/resyncInterval'",
        "at '/leaderElection': additional properties 'enable' not allowed",
        "at '/networkPolicy/aws/cidrs/0'",
        "at '/networkPolicy/apiServer/cidrs/0'",
    ] {
        assert!(message.contains(expected), "expected {expected:?} in:\n{message}");
    }

    // A break-glass role, unless explicitly waived.
    let message = rejected("{}", &["--values", MINIMAL_VALUES, "--set", "breakGlassRoleArn="]);
    assert!(message.contains("at '/breakGlassRoleArn'"), "{message}");
    let mut cmd = helm_template_command();
    cmd.args(["ito", CHART, "--values", MINIMAL_VALUES]).args([
        "--set",
        "breakGlassRoleArn=",
        "--set",
        "allowNoBreakGlassRole=true",
    ]);
    run(cmd, None);
}

#[test]
fn service_monitor_without_its_crd_fails_with_a_clear_message() {
    let message = rejected("{}", &["--values", MINIMAL_VALUES, "--set", "metrics.serviceMonitor.enabled=true"]);
    assert!(message.contains("needs the ServiceMonitor CRD (monitoring.coreos.com/v1"), "{message}");
}

#[test]
fn chart_ships_the_generated_crd() {
    let generated = read(&format!("crds/{CRD_FILE}"));
    let shipped = read(&format!("{CHART}/crds/{CRD_FILE}"));
    assert!(
        generated == shipped,
        "{CHART}/crds/{CRD_FILE} differs from crds/{CRD_FILE}: run `make chart-crds` (after `make crds`)"
    );
    let crd_files: Vec<String> = std::fs::read_dir(repo_root().join(CHART).join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(crd_files, [CRD_FILE], "the chart's crds/ holds exactly the generated CRD");
    for entry in std::fs::read_dir(repo_root().join(CHART).join("templates")).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if entry.file_name() != "crd.yaml" {
            assert!(!text.contains("CustomResourceDefinition"), "only templates/crd.yaml renders the CRD");
        }
    }
}

const GITOPS_PROTECTION: [(&str, &str); 2] = [
    ("argocd.argoproj.io/sync-options", "Delete=false,Prune=false"),
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
];

fn assert_protected(crd: &Value, which: &str) {
    for (key, value) in GITOPS_PROTECTION {
        assert_eq!(crd["metadata"]["annotations"][key], value, "{key} on {which}");
    }
}

/// Like cert-manager's crds.enabled: off by default (crds/ only), and when on, the same CRD with
/// the release's labels and, unless crds.keep=false, kept on uninstall.
#[test]
fn templated_crd_is_opt_in_and_kept() {
    let base = ["ito", CHART, "--namespace", "imaging-system", "--values", MINIMAL_VALUES];
    let docs = documents(&helm_template(&base));
    assert!(!docs.iter().any(|d| kind_of(d) == "CustomResourceDefinition"), "no CRD template by default");

    let shipped = &documents(&read(&format!("crds/{CRD_FILE}")))[0];
    let docs = documents(&helm_template(&[&base[..], &["--set", "crds.enabled=true"]].concat()));
    let crd = one(&docs, "CustomResourceDefinition");
    assert!(
        integral_numbers(&crd["spec"]) == integral_numbers(&shipped["spec"]),
        "the templated CRD is the one of crds/"
    );
    assert_eq!(crd["metadata"]["name"], shipped["metadata"]["name"]);
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
    assert_protected(crd, "the templated CRD");

    let docs = documents(&helm_template(&[&base[..], &["--set", "crds.enabled=true,crds.keep=false"]].concat()));
    let crd = one(&docs, "CustomResourceDefinition");
    assert!(crd["metadata"]["annotations"].get("helm.sh/resource-policy").is_none(), "crds.keep=false");
    assert_protected(crd, "the templated CRD without keep");
}

/// `value` with every number that has no fraction as an integer: the generated CRD writes
/// `maximum: 30.0`, and Helm's `toYaml` writes `30`.
fn integral_numbers(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(integral_numbers).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), integral_numbers(v))).collect()),
        _ => value.clone(),
    }
}

/// Deleting the CRD deletes every tenant: no copy of it may be pruned by Argo CD or Flux.
#[test]
fn every_copy_of_the_crd_is_protected_from_gitops_pruning() {
    for path in [format!("crds/{CRD_FILE}"), format!("{CHART}/crds/{CRD_FILE}"), format!("deploy/manifests/{CRD_FILE}")]
    {
        assert_protected(&documents(&read(&path))[0], &path);
    }
}

#[test]
fn deploy_manifests_are_what_the_chart_renders() {
    let args = deploy_template_args();
    let mut cmd = helm();
    cmd.args(&args);
    let rendered = run(cmd, None);
    let committed = read("deploy/manifests/operator.yaml");
    assert!(
        without_leading_comments(&committed) == rendered,
        "deploy/manifests/operator.yaml differs from `helm {}`: run `make deploy-manifests`",
        args.join(" ")
    );
    assert!(
        read(&format!("deploy/manifests/{CRD_FILE}")) == read(&format!("crds/{CRD_FILE}")),
        "deploy/manifests/{CRD_FILE} differs from crds/{CRD_FILE}: run `make deploy-manifests`"
    );
}

#[test]
fn kustomize_output_carries_config_env() {
    let docs = documents(&run(
        {
            let mut cmd = kubectl();
            cmd.args(["kustomize", "deploy/"]);
            cmd
        },
        None,
    ));
    assert_eq!(kind_of(&docs[0]), "Namespace", "the namespace is applied first");
    assert_eq!(kind_of(&docs[1]), "CustomResourceDefinition", "then the CRD");
    let crd = &docs[1];
    assert_eq!(crd["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"], "disabled");
    assert_eq!(crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"], "Delete=false,Prune=false");

    let settings: Vec<(String, String)> = read("deploy/config.env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value lines");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert!(settings.len() >= 4, "config.env sets the required settings");
    let config = &one(&docs, "ConfigMap")["data"];
    for (key, value) in &settings {
        assert_eq!(config[key], json!(value), "{key} from config.env");
    }
    assert_eq!(config["ITO_LEADER_ELECTION"], "true", "the chart's keys stay (merge, not replace)");
    let role = settings.iter().find(|(k, _)| k == "ITO_OPERATOR_ROLE_ARN").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(one(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], json!(role));
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "imaging-tenant-operator");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        name_of(one(&docs, "ConfigMap"))
    );
}

/// The GitOps examples pass the chart's schema and point at paths that exist.
#[test]
fn gitops_examples_are_valid() {
    let argo = documents(&read("deploy/gitops/argocd-application.yaml"));
    let source = &one(&argo, "Application")["spec"]["source"];
    assert_eq!(source["path"], CHART);
    let flux = documents(&read("deploy/gitops/flux-helmrelease.yaml"));
    let release = one(&flux, "HelmRelease");
    assert_eq!(release["spec"]["chart"]["spec"]["chart"], format!("./{CHART}"));
    let kustomization = documents(&read("deploy/gitops/flux-kustomization.yaml"));
    assert_eq!(named(&kustomization, "Kustomization", "imaging-tenant-operator")["spec"]["path"], "./deploy");
    let tenants = named(&kustomization, "Kustomization", "imaging-tenants");
    assert_eq!(tenants["spec"]["dependsOn"], json!([{"name": "imaging-tenant-operator"}]), "tenants wait for the CRD");
    assert!(repo_root().join("deploy/kustomization.yaml").is_file());

    let dir = scratch_dir("gitops-values");
    for (name, values) in [("argocd", &source["helm"]["valuesObject"]), ("flux", &release["spec"]["values"])] {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(values).unwrap()).unwrap();
        let mut cmd = helm_template_command();
        cmd.args(["ito", CHART, "--values"]).arg(&file);
        run(cmd, None);
    }
}

fn render_with(set: &str) -> Vec<Value> {
    documents(&helm_template(&[
        "ito",
        CHART,
        "--namespace",
        "imaging-system",
        "--values",
        MINIMAL_VALUES,
        "--set",
        set,
    ]))
}

/// OpenShift's restricted-v2 assigns the user ID and rejects a fixed one: unsetting it leaves a
/// pod that still runs as non-root.
#[test]
fn security_context_can_drop_the_fixed_user_for_openshift() {
    let docs = render_with("podSecurityContext.runAsUser=null,podSecurityContext.runAsGroup=null");
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"], json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}));
    let container = &pod["containers"][0]["securityContext"];
    assert!(container.get("runAsUser").is_none(), "{container}");
    assert_eq!(container["runAsNonRoot"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
}

#[test]
fn pod_disruption_budget_only_with_more_than_one_replica() {
    let docs = render_with("replicaCount=1");
    assert!(!docs.iter().any(|d| kind_of(d) == "PodDisruptionBudget"), "one replica: no budget to block drains");
    let message =
        rejected("{}", &["--values", MINIMAL_VALUES, "--set", "replicaCount=2,podDisruptionBudget.minAvailable=2"]);
    assert!(message.contains("podDisruptionBudget.minAvailable (2) must be less than replicaCount (2)"), "{message}");
}

#[test]
fn service_account_can_be_brought_and_irsa_left_out() {
    let docs = render_with("serviceAccount.create=false,serviceAccount.name=platform-operator");
    assert!(!docs.iter().any(|d| kind_of(d) == "ServiceAccount"), "no ServiceAccount created");
    assert_eq!(one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"], "platform-operator");
    assert_eq!(one(&docs, "ClusterRoleBinding")["subjects"][0]["name"], "platform-operator");
    let message = rejected("{}", &["--values", MINIMAL_VALUES, "--set", "serviceAccount.create=false"]);
    assert!(message.contains("serviceAccount.create=false needs serviceAccount.name"), "{message}");
    let message = rejected(
        "{}",
        &[
            "--values",
            MINIMAL_VALUES,
            "--set",
            "serviceAccount.create=false,serviceAccount.name=x,serviceAccount.roleArn=arn:aws:iam::111122223333:role/x",
        ],
    );
    assert!(message.contains("with serviceAccount.create=false, annotate your own ServiceAccount"), "{message}");

    // EKS Pod Identity: no IRSA annotation.
    let docs = render_with("serviceAccount.irsa=false");
    let sa = one(&docs, "ServiceAccount");
    assert!(sa["metadata"].get("annotations").is_none(), "{sa}");
    let docs = render_with("serviceAccount.irsa=false,serviceAccount.annotations.example\\.com/owner=platform");
    assert_eq!(one(&docs, "ServiceAccount")["metadata"]["annotations"], json!({"example.com/owner": "platform"}));
    let message = rejected(
        "{}",
        &[
            "--values",
            MINIMAL_VALUES,
            "--set",
            "serviceAccount.irsa=false,serviceAccount.roleArn=arn:aws:iam::111122223333:role/x",
        ],
    );
    assert!(message.contains("serviceAccount.roleArn is the IRSA annotation"), "{message}");
}

#[test]
fn rbac_can_be_left_to_the_platform() {
    let docs = render_with("rbac.create=false");
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(!docs.iter().any(|d| kind_of(d) == kind), "rbac.create=false renders no {kind}");
    }
    assert!(docs.iter().any(|d| kind_of(d) == "Deployment"));
}

/// For people and GitOps tools: read, or manage, ImagingTenants; never their status, never
/// aggregated into the built-in roles that tenant admins hold.
#[test]
fn user_cluster_roles_read_or_manage_tenants_and_are_not_aggregated() {
    let docs = documents(&helm_template(&["ito", CHART, "--namespace", "imaging-system", "--values", MINIMAL_VALUES]));
    let rules = |name: &str| -> BTreeSet<(String, String)> {
        let role = named(&docs, "ClusterRole", name);
        assert!(role.get("aggregationRule").is_none(), "{name} aggregates nothing");
        let labels = role["metadata"]["labels"].as_object().unwrap();
        assert!(!labels.keys().any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to")), "{name}: {labels:?}");
        let mut granted = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["apiGroups"], json!(["imaging.tenancy.dev"]), "{name}: {rule}");
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert((resource.as_str().unwrap().to_owned(), verb.as_str().unwrap().to_owned()));
                }
            }
        }
        granted
    };
    let pairs = |resource: &str, verbs: &[&str]| -> Vec<(String, String)> {
        verbs.iter().map(|v| (resource.to_owned(), (*v).to_owned())).collect()
    };
    let read = ["get", "list", "watch"];
    let viewer: BTreeSet<_> =
        [pairs("imagingtenants", &read), pairs("imagingtenants/status", &read)].concat().into_iter().collect();
    assert_eq!(rules("imagingtenant-viewer"), viewer);
    let editor: BTreeSet<_> = [
        pairs("imagingtenants", &["get", "list", "watch", "create", "update", "patch", "delete"]),
        pairs("imagingtenants/status", &read),
    ]
    .concat()
    .into_iter()
    .collect();
    assert_eq!(rules("imagingtenant-editor"), editor);

    let docs = render_with("rbac.userRoles=false");
    assert_eq!(docs.iter().filter(|d| kind_of(d) == "ClusterRole").count(), 1, "only the operator's");
}

#[test]
fn topology_spread_constraints_pass_through_and_select_the_operator_pods() {
    let values = r#"
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
  - maxSkew: 2
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {example.com/app: operator}}
"#;
    let dir = scratch_dir("spread");
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let file = file.to_string_lossy().into_owned();
    let docs = documents(&helm_template(&["ito", CHART, "--values", MINIMAL_VALUES, "--values", &file]));
    let spread = &one(&docs, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(
        spread,
        &json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "imaging-tenant-operator", "app.kubernetes.io/instance": "ito"}}},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"example.com/app": "operator"}}},
        ]),
        "used instead of topologySpread's"
    );
}

/// A parent chart passes `global` to every subchart: the strict schema must let it through.
#[test]
fn chart_works_as_a_subchart() {
    let docs = render_with("global.imageRegistry=registry.example.com,global.storageClass=gp3");
    assert!(docs.iter().any(|d| kind_of(d) == "Deployment"));
}

/// The crate's version is the one to change: the chart's version and appVersion (hence the default
/// image tag) and the GitOps examples' Git refs follow it (`make chart-version`).
#[test]
fn chart_version_is_the_crate_version() {
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        .expect("the package's version in Cargo.toml");
    let chart: Value = serde_yaml::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert_eq!(chart["version"], json!(version), "Chart.yaml version: run `make chart-version`");
    assert_eq!(chart["appVersion"], json!(version), "Chart.yaml appVersion: run `make chart-version`");
    assert_eq!(chart["kubeVersion"], ">=1.30.0-0", "ValidatingAdmissionPolicy v1 needs 1.30");
    assert!(chart["home"].as_str().is_some_and(|h| h.starts_with("https://")), "Chart.yaml home");
    assert!(chart["sources"].as_array().is_some_and(|s| !s.is_empty()), "Chart.yaml sources");
    for path in [
        "deploy/gitops/argocd-application.yaml",
        "deploy/gitops/flux-helmrelease.yaml",
        "deploy/gitops/flux-kustomization.yaml",
    ] {
        for line in read(path).lines() {
            let line = line.trim();
            if let Some(reference) = line.strip_prefix("tag: ").or_else(|| line.strip_prefix("targetRevision: ")) {
                assert_eq!(reference, format!("v{version}"), "{path}: run `make chart-version`");
            }
        }
    }
    let kustomization = read("deploy/kustomization.yaml");
    assert!(!kustomization.contains("newTag:"), "deploy/kustomization.yaml takes the tag from the chart's appVersion");
    let rendered = read("deploy/manifests/operator.yaml");
    assert!(
        rendered.contains(&format!("ghcr.io/imaging-tenancy/imaging-tenant-operator:{version}\"")),
        "default image tag"
    );

    let mut cmd = helm_template_command();
    cmd.args(["ito", CHART, "--values", MINIMAL_VALUES, "--kube-version", "v1.29.9"]);
    let out = output(cmd, None);
    assert!(!out.status.success(), "the chart refuses Kubernetes 1.29");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion: >=1.30.0-0"));
}
