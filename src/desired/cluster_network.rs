//! The Admin-tier network layer: one cluster-scoped policy per tenant, evaluated before any
//! NetworkPolicy, that denies traffic between the tenant's namespaces and every namespace that is
//! neither its own nor allowed by its spec, and to the cloud metadata addresses. What it does not
//! deny it passes on to the NetworkPolicies, so a tenant's own NetworkPolicy can narrow further
//! but never open what this layer denies. It never accepts anything itself.
//!
//! Two kinds carry it, the same rules in each: sig-network's `ClusterNetworkPolicy`
//! (policy.networking.k8s.io/v1beta1, tier Admin) where the cluster serves it, otherwise its
//! predecessor `AdminNetworkPolicy` (policy.networking.k8s.io/v1alpha1), which older releases of
//! Calico, Antrea and OVN-Kubernetes implement.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::api::ImagingTenant;
use crate::api::metadata::{NAMESPACE_NAME_LABEL, TENANT_UID_LABEL};
use crate::desired::kubernetes::labels;

/// Rank among Admin-tier policies (0 is first, 1000 last). Tenants' policies select disjoint
/// namespaces, so they never compete with each other; a platform's own Admin-tier policies
/// ranked before 50 are evaluated first.
pub const PRIORITY: i32 = 50;

/// The addresses that hand out a node's or a pod's cloud credentials: the EC2 instance metadata
/// service and the EKS Pod Identity agent, over IPv4 and IPv6.
pub const METADATA_ADDRESSES: [&str; 4] =
    ["169.254.169.254/32", "169.254.170.23/32", "fd00:ec2::254/128", "fd00:ec2::23/128"];

/// Which kind carries the layer on this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavor {
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
}

impl Flavor {
    pub const GROUP: &'static str = "policy.networking.k8s.io";

    pub fn version(self) -> &'static str {
        match self {
            Flavor::ClusterNetworkPolicy => "v1beta1",
            Flavor::AdminNetworkPolicy => "v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Flavor::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Flavor::AdminNetworkPolicy => "AdminNetworkPolicy",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Flavor::ClusterNetworkPolicy => "clusternetworkpolicies",
            Flavor::AdminNetworkPolicy => "adminnetworkpolicies",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(Self::GROUP, self.version(), self.kind()),
            self.plural(),
        )
    }

    /// Both, in the order of preference.
    pub const ALL: [Flavor; 2] = [Flavor::ClusterNetworkPolicy, Flavor::AdminNetworkPolicy];
}

/// The policy's name: one per tenant, cluster-scoped, with the first characters of the tenant's
/// UID, so a tenant re-created under the same name never meets the policy its predecessor left
/// on retained namespaces.
pub fn name(tenant: &ImagingTenant) -> String {
    match tenant.metadata.uid.as_deref() {
        Some(uid) => format!("imaging-tenant-{}-{}", tenant.name_any(), uid.chars().take(8).collect::<String>()),
        None => format!("imaging-tenant-{}", tenant.name_any()),
    }
}

enum Action {
    Pass,
    Deny,
}

enum Peer {
    /// Namespaces by the name label only the API server sets.
    Named(Vec<String>),
    AllNamespaces,
    Dns,
    Networks(Vec<String>),
}

struct Rule {
    name: String,
    action: Action,
    peers: Vec<Peer>,
    /// TCP destination ports; empty: every port.
    tcp_ports: Vec<i32>,
}

impl Rule {
    fn new(name: &str, action: Action, peers: Vec<Peer>) -> Self {
        Rule { name: name.to_string(), action, peers, tcp_ports: Vec::new() }
    }
}

fn names_selector(names: &[String]) -> Value {
    json!({"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": names}]})
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::Named(names) => json!({"namespaces": names_selector(names)}),
        Peer::AllNamespaces => json!({"namespaces": {}}),
        Peer::Dns => json!({"pods": {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }}),
        Peer::Networks(cidrs) => json!({"networks": cidrs}),
    }
}

/// Ports are the one place the two kinds differ in shape.
fn rule(r: &Rule, direction: &str, flavor: Flavor) -> Value {
    let action = match r.action {
        Action::Pass => "Pass",
        Action::Deny => "Deny",
    };
    let mut out = json!({"name": r.name, "action": action, direction: r.peers.iter().map(peer).collect::<Vec<_>>()});
    if !r.tcp_ports.is_empty() {
        let (field, ports): (&str, Vec<Value>) = match flavor {
            Flavor::ClusterNetworkPolicy => {
                ("protocols", r.tcp_ports.iter().map(|p| json!({"tcp": {"destinationPort": {"number": p}}})).collect())
            }
            Flavor::AdminNetworkPolicy => {
                ("ports", r.tcp_ports.iter().map(|p| json!({"portNumber": {"protocol": "TCP", "port": p}})).collect())
            }
        };
        out[field] = ports.into();
    }
    out
}

/// Ingress: the tenant's own namespaces and the namespaces its spec allows are passed on to the
/// NetworkPolicies; every other namespace is denied.
fn ingress(tenant: &ImagingTenant, owned: &[String]) -> Vec<Rule> {
    let mut rules = vec![Rule::new("pass-same-tenant", Action::Pass, vec![Peer::Named(owned.to_vec())])];
    let allowed: Vec<String> = tenant.spec.network.allow_ingress_from.iter().map(|p| p.namespace.clone()).collect();
    if !allowed.is_empty() {
        rules.push(Rule::new("pass-allowed-namespaces", Action::Pass, vec![Peer::Named(allowed)]));
    }
    rules.push(Rule::new("deny-other-namespaces", Action::Deny, vec![Peer::AllNamespaces]));
    rules
}

/// Egress: metadata addresses are denied first; the tenant's namespaces, cluster DNS and the
/// networks its spec allows (on their ports) are passed on; every other namespace and network is
/// denied.
fn egress(tenant: &ImagingTenant, owned: &[String]) -> Vec<Rule> {
    let metadata = METADATA_ADDRESSES.iter().map(|a| a.to_string()).collect();
    let mut rules = vec![
        Rule::new("deny-metadata", Action::Deny, vec![Peer::Networks(metadata)]),
        Rule::new("pass-same-tenant", Action::Pass, vec![Peer::Named(owned.to_vec())]),
        Rule::new("pass-dns", Action::Pass, vec![Peer::Dns]),
    ];
    for (i, peer) in tenant.spec.network.allow_egress_to.iter().enumerate() {
        rules.push(Rule {
            tcp_ports: peer.ports.iter().map(|p| p.0).collect(),
            ..Rule::new(
                &format!("pass-allowed-network-{i}"),
                Action::Pass,
                vec![Peer::Networks(vec![peer.cidr.clone()])],
            )
        });
    }
    rules.push(Rule::new(
        "deny-everything-else",
        Action::Deny,
        vec![Peer::AllNamespaces, Peer::Networks(vec!["0.0.0.0/0".into(), "::/0".into()])],
    ));
    rules
}

/// The tenant's policy of the given kind, for the namespaces it owns (never one it only names:
/// a foreign namespace listed in the spec is not the tenant's to isolate).
pub fn policy(tenant: &ImagingTenant, owned: &[String], flavor: Flavor) -> Value {
    let labels: BTreeMap<String, String> = labels(tenant);
    // The subject is the owned namespaces by name and by the tenant-uid label, which only the
    // operator may put on a namespace: the admission policies let the operator's identity write
    // only policies whose subject carries that label, so a stolen token cannot aim one elsewhere.
    let mut subject = names_selector(owned);
    if let Some(uid) = tenant.metadata.uid.as_deref() {
        subject["matchLabels"] = json!({TENANT_UID_LABEL: uid});
    }
    let mut spec = json!({
        "priority": PRIORITY,
        "subject": {"namespaces": subject},
        "ingress": ingress(tenant, owned).iter().map(|r| rule(r, "from", flavor)).collect::<Vec<_>>(),
        "egress": egress(tenant, owned).iter().map(|r| rule(r, "to", flavor)).collect::<Vec<_>>(),
    });
    if flavor == Flavor::ClusterNetworkPolicy {
        spec["tier"] = "Admin".into();
    }
    json!({
        "apiVersion": format!("{}/{}", Flavor::GROUP, flavor.version()),
        "kind": flavor.kind(),
        "metadata": {"name": name(tenant), "labels": labels},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> ImagingTenant {
        serde_yaml::from_str(
            "apiVersion: imaging.tenancy.dev/v1alpha1
kind: ImagingTenant
metadata: {name: group-a, uid: 7c1f0a2b-90d4-4c52-a7d2-1b0e58e2c9aa}
spec:
  network:
    allowIngressFrom: [{namespace: ingress-nginx}]
    allowEgressTo: [{cidr: 10.20.0.0/16}]
",
        )
        .unwrap()
    }

    #[test]
    fn both_kinds_carry_the_same_rules() {
        let owned = vec!["group-a".to_string(), "group-a-ai".to_string()];
        let cnp = policy(&tenant(), &owned, Flavor::ClusterNetworkPolicy);
        let anp = policy(&tenant(), &owned, Flavor::AdminNetworkPolicy);
        assert_eq!(cnp["spec"]["ingress"], anp["spec"]["ingress"]);
        // The same egress rules, but for the shape of ports.
        let strip = |p: &Value| {
            let mut rules = p["spec"]["egress"].clone();
            for r in rules.as_array_mut().unwrap() {
                r.as_object_mut().unwrap().remove("ports");
                r.as_object_mut().unwrap().remove("protocols");
            }
            rules
        };
        assert_eq!(strip(&cnp), strip(&anp));
        let allowed = |p: &Value, field: &str| p["spec"]["egress"][3][field].clone();
        assert_eq!(allowed(&cnp, "protocols"), json!([{"tcp": {"destinationPort": {"number": 443}}}]));
        assert_eq!(allowed(&anp, "ports"), json!([{"portNumber": {"protocol": "TCP", "port": 443}}]));
        assert_eq!(cnp["spec"]["tier"], "Admin");
        assert!(anp["spec"].get("tier").is_none());
        assert_eq!(cnp["metadata"]["name"], "imaging-tenant-group-a-7c1f0a2b");
    }

    #[test]
    fn nothing_is_accepted_and_metadata_is_denied_first() {
        let p = policy(&tenant(), &["group-a".to_string()], Flavor::ClusterNetworkPolicy);
        for direction in ["ingress", "egress"] {
            for r in p["spec"][direction].as_array().unwrap() {
                assert!(r["action"] == "Pass" || r["action"] == "Deny", "{r}");
            }
            let last = p["spec"][direction].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["action"], "Deny", "{direction} ends in a deny");
        }
        let first = &p["spec"]["egress"][0];
        assert_eq!(first["name"], "deny-metadata");
        assert_eq!(first["to"][0]["networks"][0], "169.254.169.254/32");
    }

    #[test]
    fn the_subject_is_only_the_owned_namespaces() {
        let p = policy(&tenant(), &["group-a".to_string()], Flavor::AdminNetworkPolicy);
        assert_eq!(p["spec"]["subject"]["namespaces"]["matchExpressions"][0]["values"], json!(["group-a"]));
        assert_eq!(
            p["spec"]["subject"]["namespaces"]["matchLabels"][TENANT_UID_LABEL],
            "7c1f0a2b-90d4-4c52-a7d2-1b0e58e2c9aa"
        );
    }
}
