//! Who can talk to whom, judged by an upstream policy engine rather than by our code: the
//! NetworkPolicies and the AdminNetworkPolicies the operator made in the real API server are
//! read back and handed to `netpol-verdict` (kube-network-policies' own evaluation; see
//! tests/tools/netpol), with pods placed in the tenants' namespaces, a rogue namespace, the
//! allowed ingress namespace and kube-system.
//!
//! Then a tenant admin tries to open everything with an allow-all NetworkPolicy: the admission
//! policy refuses it, and even were it admitted (a cluster without the admission layer), the
//! Admin-tier policy still denies what matters, while without that layer the allow-all would
//! have opened it. The last part proves the engine is not vacuous: the same attack without the
//! Admin-tier layer is judged to get through (B's own NetworkPolicies still stop B to A).

use std::process::{Command, Stdio};

use crate::operator::{Operator, create_tenant, wait_condition, wait_ready};
use imaging_tenant_operator::api::condition;
use imaging_tenant_operator::desired::cluster_network::{Flavor, name as policy_name};
use ito_test_support::{ControlPlane, Moto, create_namespace, tool_path, unique_name};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// Runs netpol-verdict over a scenario; one verdict (allowed?) per connection, in order.
fn judge(scenario: &Value) -> Vec<bool> {
    let bin = tool_path("netpol-verdict").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    child.stdin.take().unwrap().write_all(scenario.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "netpol-verdict failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Value = serde_json::from_slice(&out.stdout).expect("netpol-verdict prints JSON");
    verdicts["verdicts"].as_array().unwrap().iter().map(|v| v["allowed"].as_bool().unwrap()).collect()
}

async fn namespace(client: &Client, name: &str) -> Value {
    let ns = Api::<Namespace>::all(client.clone()).get(name).await.unwrap();
    json!({"name": name, "labels": ns.labels()})
}

async fn network_policies(client: &Client, namespaces: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in namespaces {
        for p in Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap() {
            out.push(serde_json::to_value(p).unwrap());
        }
    }
    out
}

async fn admin_policy(client: &Client, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &Flavor::AdminNetworkPolicy.api_resource());
    serde_json::to_value(api.get(name).await.unwrap_or_else(|e| panic!("AdminNetworkPolicy {name}: {e}"))).unwrap()
}

fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"namespace": ns, "name": name, "ip": ip, "labels": labels})
}

fn to_pod(from: &str, to: &str, port: u16, protocol: &str) -> Value {
    json!({"from": {"pod": from}, "to": {"pod": to}, "port": port, "protocol": protocol})
}

fn to_ip(from: &str, ip: &str, port: u16) -> Value {
    json!({"from": {"pod": from}, "to": {"ip": ip}, "port": port})
}

fn allow_all(ns: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "open-everything", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
    })
}

#[tokio::test]
async fn connectivity_between_tenants_is_judged_by_kube_network_policies_before_and_after_an_allow_all_attempt() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    // AdminNetworkPolicy is the kind kube-network-policies evaluates.
    let op = Operator::start_with(cp, moto, &["--cluster-network-policy-kind", "AdminNetworkPolicy"]).await;
    let a = unique_name("conn-a");
    let a_ai = format!("{a}-ai");
    let b = unique_name("conn-b");
    let rogue = create_namespace(&client, "conn-rogue").await;
    let ingress = create_namespace(&client, "conn-ingress").await;
    let admin_user = format!("{a}-admin@example.com");
    create_tenant(
        &client,
        &op.tenant(
            &a,
            json!({
                "namespaces": [{"name": a}, {"name": a_ai}],
                "access": {"admins": [{"kind": "User", "name": admin_user}]},
                "network": {"allowIngressFrom": [{"namespace": ingress}], "allowEgressTo": [{"cidr": "10.20.0.0/16"}]},
            }),
        ),
    )
    .await;
    create_tenant(&client, &op.tenant(&b, json!({}))).await;
    let tenant_a = wait_ready(&client, &a).await;
    let tenant_b = wait_ready(&client, &b).await;
    let guarded = wait_condition(&client, &a, condition::GUARDED, "True", Duration::from_secs(30)).await;
    let status = guarded.status.unwrap();
    assert!(
        status.isolation_layers.contains(&"AdminNetworkPolicy".to_string())
            && status.isolation_layers.contains(&"ValidatingAdmissionPolicy".to_string()),
        "{:?}",
        status.isolation_layers
    );

    let names = [a.as_str(), a_ai.as_str(), b.as_str(), rogue.as_str(), ingress.as_str(), "kube-system"];
    let mut namespaces = Vec::new();
    for n in names {
        namespaces.push(namespace(&client, n).await);
    }
    let pods = json!([
        pod(&a, "web", "10.1.0.10", json!({"app": "web"})),
        pod(&a_ai, "worker", "10.1.0.11", json!({"app": "worker"})),
        pod(&b, "web", "10.1.1.10", json!({"app": "web"})),
        pod(&rogue, "attacker", "10.1.2.10", json!({})),
        pod(&ingress, "controller", "10.1.3.10", json!({})),
        pod("kube-system", "coredns", "10.1.4.10", json!({"k8s-app": "kube-dns"})),
    ]);
    let (a_web, a_worker, b_web) = (format!("{a}/web"), format!("{a_ai}/worker"), format!("{b}/web"));
    let (attacker, controller) = (format!("{rogue}/attacker"), format!("{ingress}/controller"));
    // (connection, allowed under the operator's isolation)
    let cases: Vec<(&str, Value, bool)> = vec![
        ("A to A's other namespace", to_pod(&a_web, &a_worker, 8080, "TCP"), true),
        ("A's other namespace to A", to_pod(&a_worker, &a_web, 8080, "TCP"), true),
        ("B to A", to_pod(&b_web, &a_web, 8080, "TCP"), false),
        ("A to B", to_pod(&a_web, &b_web, 8080, "TCP"), false),
        ("rogue namespace to A", to_pod(&attacker, &a_web, 8080, "TCP"), false),
        ("allowed ingress namespace to A", to_pod(&controller, &a_web, 8080, "TCP"), true),
        ("A to kube-dns", to_pod(&a_web, "kube-system/coredns", 53, "UDP"), true),
        ("A to its allowed network on 443", to_ip(&a_web, "10.20.1.5", 443), true),
        ("A to its allowed network on 22", to_ip(&a_web, "10.20.1.5", 22), false),
        ("A to the instance metadata service", to_ip(&a_web, "169.254.169.254", 80), false),
        ("A to the internet", to_ip(&a_web, "8.8.8.8", 443), false),
    ];
    let connections: Vec<Value> = cases.iter().map(|(_, c, _)| c.clone()).collect();
    let expected: Vec<bool> = cases.iter().map(|(_, _, e)| *e).collect();
    let admin_policies = vec![
        admin_policy(&client, &policy_name(&tenant_a)).await,
        admin_policy(&client, &policy_name(&tenant_b)).await,
    ];
    let scenario = |policies: Vec<Value>, admin: Vec<Value>| {
        json!({
            "namespaces": namespaces, "pods": pods, "networkPolicies": policies,
            "adminNetworkPolicies": admin, "connections": connections,
        })
    };
    let report = |verdicts: &[bool]| -> String {
        cases.iter().zip(verdicts).map(|((what, _, _), v)| format!("{what}: {v}\n")).collect()
    };

    let live = network_policies(&client, &[&a, &a_ai, &b]).await;
    let before = judge(&scenario(live.clone(), admin_policies.clone()));
    assert_eq!(before, expected, "as operated:\n{}", report(&before));
    // The NetworkPolicies alone (no Admin-tier layer) already isolate as long as nobody opens them.
    let np_only = judge(&scenario(live.clone(), vec![]));
    assert_eq!(np_only, expected, "NetworkPolicies alone:\n{}", report(&np_only));

    // A's admin tries to open everything: the admission policy refuses it.
    let attempt: NetworkPolicy = serde_json::from_value(allow_all(&a)).unwrap();
    let err = Api::<NetworkPolicy>::namespaced(cp.client_as(&admin_user, &[]), &a)
        .create(&PostParams::default(), &attempt)
        .await
        .expect_err("an allow-all NetworkPolicy must be refused");
    assert!(err.to_string().contains("ValidatingAdmissionPolicy"), "{err}");
    let after = judge(&scenario(network_policies(&client, &[&a, &a_ai, &b]).await, admin_policies.clone()));
    assert_eq!(after, expected, "after the refused attempt:\n{}", report(&after));

    // Were it admitted (a cluster without the admission layer), the Admin-tier layer still holds.
    let mut opened = live.clone();
    opened.push(allow_all(&a));
    let with_layer = judge(&scenario(opened.clone(), admin_policies));
    assert_eq!(with_layer, expected, "allow-all admitted, Admin-tier layer in place:\n{}", report(&with_layer));
    // And without that layer the allow-all gets through: the engine tells the difference.
    let without = judge(&scenario(opened, vec![]));
    let opened_cases = [
        "rogue namespace to A",
        "A to its allowed network on 22",
        "A to the instance metadata service",
        "A to the internet",
    ];
    for (((what, _, _), verdict), expected) in cases.iter().zip(&without).zip(&expected) {
        let opened_now = opened_cases.contains(what);
        assert_eq!(*verdict, *expected || opened_now, "allow-all admitted, no Admin-tier layer: {what}");
    }
}
