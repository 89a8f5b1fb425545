//! `plan`: validate ImagingTenant manifests offline with the cluster's rules and print what the
//! operator would create, for review in pull requests of GitOps repositories.
//!
//! Every document must be an ImagingTenant that the apiserver would accept (see
//! [`validate`]). The output (YAML by default) is every Kubernetes object of every tenant, in
//! the order the operator applies them, followed by the tenant's AWS resources with their
//! policies as a comment block: so the whole output can be given to `kubectl apply
//! --dry-run=server -f -`. `-o json` gives the same as data.
//!
//! The objects carry no tenant-UID label, and AWS names show `<uid-hash>`: both derive from the
//! tenant's UID, which exists only once the tenant is stored. A manifest that has a UID (`kubectl get itn NAME -o yaml`) is planned with it.
//!
//! Exit status: 0 when every document is valid; 1 when any is not (every problem of every
//! document goes to stderr and nothing to stdout, so a failed plan cannot be half-applied); 2
//! when the input cannot be read (a missing file, a YAML syntax error, a bad flag).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::api::ImagingTenant;
use crate::config::{Settings, SettingsArgs};
use crate::desired;
use crate::desired::aws::TenantAws;

mod manifest;
pub(crate) mod validate;

pub use manifest::{Document, parse_documents};
pub use validate::{Problem, TenantRules};

/// Settings `plan` renders with; what is not given is shown as a placeholder. The flags and
/// environment variables are those of `run`.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_help = "Exit status: 0 every document is a valid ImagingTenant; 1 some are not (each problem is \
    printed to stderr, nothing to stdout); 2 the input could not be read.")]
pub struct PlanSettings {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// AWS account ID (`run` reads it from STS).
    #[arg(long, env = "ITO_ACCOUNT_ID")]
    pub(crate) account_id: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Yaml)]
    pub(crate) output: OutputFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Kubernetes objects as YAML documents, AWS resources as comments.
    #[default]
    Yaml,
    /// One JSON object: every tenant with its Kubernetes objects and AWS resources.
    Json,
}

impl PlanSettings {
    /// The operator settings these flags describe, placeholders for the rest.
    pub(crate) fn to_settings(&self) -> Result<Settings, String> {
        self.settings.resolve(self.account_id.as_deref())
    }
}

/// What one tenant gets; `-o json` prints these as they are.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub(crate) struct TenantPlan {
    pub(crate) document: usize,
    pub(crate) name: String,
    /// Every Kubernetes object, in apply order, with apiVersion and kind.
    pub(crate) kubernetes: Vec<Value>,
    /// The IAM role, KMS key and S3 bucket, with their policies.
    pub(crate) aws: TenantAws,
}

impl TenantPlan {
    pub(crate) fn new(document: usize, tenant: &ImagingTenant, settings: &Settings) -> Self {
        TenantPlan {
            document,
            name: tenant.tenant_name().to_string(),
            kubernetes: desired::kubernetes::render(tenant, settings),
            aws: desired::aws::render(tenant, settings),
        }
    }
}

/// The outcome of checking every document.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) plans: Vec<TenantPlan>,
    /// One line per problem: `document 2 (group-b): spec.namespaces[1].name: ...`.
    pub(crate) errors: Vec<String>,
    pub(crate) invalid_documents: usize,
    /// Conflicts between documents that the apiserver cannot see (the operator reports them as
    /// conditions): the same tenant twice, a namespace claimed by two tenants.
    pub(crate) warnings: Vec<String>,
}

/// Checks and plans every document.
pub(crate) fn plan_documents(documents: &[Document], settings: &Settings) -> Outcome {
    let rules = TenantRules::new();
    let mut outcome = Outcome::default();
    let mut tenants = Vec::new();
    for document in documents {
        match rules.check_create(&document.value) {
            Ok(tenant) => {
                outcome.plans.push(TenantPlan::new(document.number, &tenant, settings));
                tenants.push((document.number, tenant));
            }
            Err(problems) => {
                outcome.invalid_documents += 1;
                let label = document.label();
                outcome.errors.extend(problems.iter().map(|p| format!("{label}: {p}")));
            }
        }
    }
    outcome.warnings = conflicts(&tenants);
    outcome
}

fn conflicts(tenants: &[(usize, ImagingTenant)]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut namespaces: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for (document, tenant) in tenants {
        let name = tenant.tenant_name();
        if let Some(first) = names.insert(name, *document) {
            warnings.push(format!(
                "documents {first} and {document} are both tenant {name}: the second replaces the first when applied"
            ));
            continue;
        }
        for ns in tenant.namespace_names() {
            if let Some((first, owner)) = namespaces.get(&ns) {
                warnings.push(format!(
                    "namespace {ns} is claimed by tenant {owner} (document {first}) and tenant {name} (document {document}): the tenant created first keeps it, the other reports NamespaceConflict"
                ));
            } else {
                namespaces.insert(ns, (*document, name));
            }
        }
    }
    warnings
}

/// YAML documents: Kubernetes objects, then each tenant's AWS resources as comments.
pub(crate) fn render_yaml(plans: &[TenantPlan]) -> String {
    let mut out = String::from(
        "# Plan of imaging-tenant-operator, computed offline.\n\
         # Kubernetes objects are in the order the operator applies them. It also sets the label\n\
         # imaging.tenancy.dev/tenant-uid, which needs the tenant's UID, which exists once the tenant\n\
         # is stored, as does <uid-hash> in AWS names.\n\
         # AWS resources follow each tenant's objects as comments: the operator creates them through\n\
         # the AWS API, not kubectl.\n",
    );
    for plan in plans {
        for object in &plan.kubernetes {
            let kind = object["kind"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let place = match object["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            out.push_str(&format!("---\n# tenant {}: {place}\n", plan.name));
            out.push_str(&to_yaml(object));
        }
        let replica = match &plan.aws.replication {
            Some(r) => format!(
                ", and in {} the replica S3 bucket and its KMS key, the replication role and the bucket's replication configuration",
                r.region
            ),
            None => String::new(),
        };
        out.push_str(&format!(
            "---\n# tenant {}: AWS resources (IAM role, KMS key, S3 bucket{replica}) with their policies\n#\n",
            plan.name
        ));
        for line in to_yaml(&plan.aws).lines() {
            out.push_str(&format!("#   {line}\n"));
        }
    }
    out
}

/// One JSON object, for tools: `{"tenants": [{"document", "name", "kubernetes", "aws"}]}`.
pub(crate) fn render_json(plans: &[TenantPlan]) -> String {
    #[derive(Serialize)]
    struct Plan<'a> {
        tenants: &'a [TenantPlan],
    }
    let mut out = serde_json::to_string_pretty(&Plan { tenants: plans }).expect("plans serialize to JSON");
    out.push('\n');
    out
}

fn to_yaml(value: &impl Serialize) -> String {
    serde_yaml::to_string(value).expect("plans serialize to YAML")
}

/// `imaging-tenant-operator plan -f FILE|-`.
pub fn main(file: &Path, settings: &PlanSettings) -> ExitCode {
    const INVALID: u8 = 1;
    const UNREADABLE: u8 = 2;

    let operator_settings = match settings.to_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(UNREADABLE);
        }
    };
    let (source, text) = match read_input(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(UNREADABLE);
        }
    };
    let documents = match parse_documents(&text) {
        Ok(d) if d.is_empty() => {
            eprintln!("error: {source}: no manifests found; expected ImagingTenant documents");
            return ExitCode::from(UNREADABLE);
        }
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::from(UNREADABLE);
        }
    };

    let outcome = plan_documents(&documents, &operator_settings);
    for error in &outcome.errors {
        eprintln!("{error}");
    }
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    if outcome.invalid_documents > 0 {
        eprintln!(
            "{} of {} documents in {source} are invalid; nothing planned",
            outcome.invalid_documents,
            documents.len()
        );
        return ExitCode::from(INVALID);
    }

    let rendered = match settings.output {
        OutputFormat::Yaml => render_yaml(&outcome.plans),
        OutputFormat::Json => render_json(&outcome.plans),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(rendered.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing left to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the plan: {e}");
            ExitCode::from(UNREADABLE)
        }
    }
}

/// The file's text, or standard input's for `-`, with the name errors use for it.
fn read_input(file: &Path) -> Result<(String, String), String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading standard input: {e}"))?;
        Ok(("standard input".into(), text))
    } else {
        let source = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| format!("reading {source}: {e}"))?;
        Ok((source, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(yaml: &str) -> Vec<Document> {
        parse_documents(yaml).unwrap()
    }

    const GROUP_B: &str =
        "apiVersion: imaging.tenancy.dev/v1alpha1\nkind: ImagingTenant\nmetadata: {name: group-b}\nspec: {}\n";

    #[test]
    fn errors_name_the_document_the_tenant_and_the_field() {
        let yaml = format!(
            "{GROUP_B}---\napiVersion: imaging.tenancy.dev/v1alpha1\nkind: ImagingTenant\nmetadata: {{name: group-c}}\nspec:\n  namespaces: [{{name: group-c}}, {{name: group-x}}]\n"
        );
        let outcome = plan_documents(&documents(&yaml), &Settings::placeholder());
        assert_eq!(outcome.invalid_documents, 1);
        assert_eq!(
            outcome.errors,
            [
                "document 2 (group-c): every spec.namespaces[].name must be the tenant name or start with '<tenant name>-'"
            ]
        );
        assert_eq!(outcome.plans.len(), 1);
    }

    #[test]
    fn a_field_error_is_prefixed_by_document_and_path() {
        let yaml = GROUP_B.replace("spec: {}", "spec: {encryption: {deletionWindowDays: 31}}");
        let outcome = plan_documents(&documents(&yaml), &Settings::placeholder());
        assert_eq!(
            outcome.errors,
            [
                "document 1 (group-b): spec.encryption.deletionWindowDays: Invalid value: 31: should be less than or equal to 30"
            ]
        );
    }

    #[test]
    fn two_tenants_claiming_one_namespace_are_warned_about() {
        let yaml = format!("{GROUP_B}---\n{}", GROUP_B.replace("spec: {}", "spec: {namespaces: [{name: group-b}]}"));
        let outcome = plan_documents(&documents(&yaml), &Settings::placeholder());
        assert!(outcome.errors.is_empty());
        assert_eq!(outcome.warnings.len(), 1);
        assert!(outcome.warnings[0].contains("documents 1 and 2 are both tenant group-b"));
    }

    #[test]
    fn yaml_output_is_kubernetes_documents_with_aws_as_comments() {
        let outcome = plan_documents(&documents(GROUP_B), &Settings::placeholder());
        let yaml = render_yaml(&outcome.plans);
        let docs = documents(&yaml);
        assert_eq!(docs.len(), outcome.plans[0].kubernetes.len(), "AWS resources are comments only");
        assert!(docs.iter().all(|d| d.value["apiVersion"].is_string() && d.value["kind"].is_string()));
        assert_eq!(docs[0].value["kind"], "Namespace");
        assert!(yaml.contains("# tenant group-b: AWS resources"));
    }

    #[test]
    fn a_stored_tenant_is_planned_with_its_uid() {
        let yaml = GROUP_B.replace(
            "metadata: {name: group-b}",
            "metadata: {name: group-b, uid: 7d3c9a9e-5f1b-4c52-9a43-0b6f1a2e9c11}",
        );
        let settings = PlanSettings {
            settings: SettingsArgs { cluster_name: Some("prod-1".into()), ..SettingsArgs::default() },
            ..PlanSettings::default()
        }
        .to_settings()
        .unwrap();
        let outcome = plan_documents(&documents(&yaml), &settings);
        let namespace = &outcome.plans[0].kubernetes[0];
        assert_eq!(
            namespace["metadata"]["labels"]["imaging.tenancy.dev/tenant-uid"],
            "7d3c9a9e-5f1b-4c52-9a43-0b6f1a2e9c11"
        );
        assert!(namespace["metadata"].get("ownerReferences").is_none(), "no owner reference: {namespace}");
        assert!(!outcome.plans[0].aws.bucket.name.contains('<'), "{}", outcome.plans[0].aws.bucket.name);
    }

    #[test]
    fn settings_fill_placeholders_from_account_and_partition() {
        let settings = PlanSettings {
            settings: SettingsArgs { aws_region: Some("us-gov-west-1".into()), ..SettingsArgs::default() },
            account_id: Some("123456789012".into()),
            ..PlanSettings::default()
        }
        .to_settings()
        .unwrap();
        assert_eq!(settings.partition, "aws-us-gov");
        assert_eq!(settings.operator_role_arn, "arn:aws-us-gov:iam::123456789012:role/<operator-role>");
        let bad = PlanSettings { account_id: Some("12345".into()), ..PlanSettings::default() };
        assert!(bad.to_settings().is_err());
    }
}
