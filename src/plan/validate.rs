//! The apiserver's admission checks for ImagingTenants, run offline on the CRD's own schema.
//!
//! The steps, and their order, follow what the apiserver does with a `kubectl apply` (strict
//! field validation) of a custom resource:
//!
//! 1. unknown fields are an error, and nothing else is checked (strict decoding);
//! 2. `null` in a field that is not nullable is dropped, then schema defaults are applied;
//! 3. `metadata.name` is checked (required; a DNS-1123 subdomain);
//! 4. the structural OpenAPI schema: types, required fields, enums, lengths, ranges, item counts;
//! 5. the CEL rules (`x-kubernetes-validations`), unless step 3 or 4 found a "blocking" error
//!    (wrong type, missing field, unsupported value, too long, too many), as the apiserver skips
//!    them then too.
//!
//! Messages use the apiserver's wording, so a person sees the same words from `plan` and from
//! `kubectl apply`. The status is ignored, as the apiserver ignores it on create.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::{Location, LocationSegment};
use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, apply_defaults, compile_schema};
use serde_json::{Value, json};

use crate::api::{GROUP, ImagingTenant, KIND, VERSION};

/// What the apiserver adds when it skips the CEL rules because of a blocking error.
pub(crate) const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// One thing wrong with a manifest: the field, and what the rule says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `spec.namespaces[1].name`, `spec.quota.hard[requests.cpu]`; empty for the whole object.
    pub path: String,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// The ImagingTenant admission rules, compiled once from the CRD.
pub struct TenantRules {
    /// The CRD's `openAPIV3Schema`, for defaults and CEL.
    schema: Value,
    /// The same schema made strict (unknown fields rejected) and plain JSON Schema.
    strict_schema: Value,
    strict: jsonschema::Validator,
    rules: CompiledSchema,
    cel: Validator,
}

impl Default for TenantRules {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantRules {
    pub fn new() -> Self {
        let crd = ImagingTenant::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).expect("the CRD schema serializes to JSON"))
            .expect("the derived CRD has an openAPIV3Schema");
        let strict_schema = strict_schema(&schema);
        let strict = jsonschema::options()
            .build(&strict_schema)
            .expect("the strict copy of the CRD schema is a valid JSON Schema");
        let rules = compile_schema(&schema);
        TenantRules { schema, strict_schema, strict, rules, cel: Validator::new() }
    }

    /// CEL rules that kube-cel cannot compile (there should be none; a test checks).
    #[cfg(test)]
    fn rule_compilation_errors(&self) -> Vec<String> {
        self.rules.compilation_errors().iter().map(|e| e.to_string()).collect()
    }

    /// Checks a manifest as the apiserver does when it is created, and returns the tenant with
    /// every default applied.
    pub fn check_create(&self, manifest: &Value) -> Result<ImagingTenant, Vec<Problem>> {
        self.check(manifest, None)
    }

    /// Checks a manifest as the apiserver does when it replaces `old`, which is stored already
    /// (and so valid): the create checks and the transition rules (those using `oldSelf`).
    pub fn check_update(&self, manifest: &Value, old: &Value) -> Result<ImagingTenant, Vec<Problem>> {
        self.check(manifest, Some(old))
    }

    fn check(&self, manifest: &Value, old: Option<&Value>) -> Result<ImagingTenant, Vec<Problem>> {
        check_type(manifest)?;

        let unknown = self.unknown_fields(manifest);
        if !unknown.is_empty() {
            return Err(unknown);
        }

        let object = self.admitted(manifest);
        let mut problems = Vec::new();
        let mut blocking = false;

        let name_checked = check_name(&object);
        blocking |= name_checked.blocking;
        problems.extend(name_checked.problems);

        for error in self.strict.iter_errors(&object) {
            blocking |= is_blocking(error.kind());
            problems.extend(self.describe(&object, &error));
        }

        if blocking {
            problems.push(Problem::new("", RULES_NOT_CHECKED));
            return Err(problems);
        }

        let old = old.map(|o| self.admitted(o));
        if let Err(errors) = self.cel.validate_compiled(&self.rules, &object, old.as_ref()) {
            problems.extend(errors.into_iter().map(|e| Problem::new(e.field_path, e.message)));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        serde_json::from_value(object)
            .map_err(|e| vec![Problem::new("", format!("does not match the ImagingTenant type: {e}"))])
    }

    /// Strict field validation: every field the schema does not declare, as the apiserver names
    /// it (`unknown field "spec.namspaces"`).
    fn unknown_fields(&self, manifest: &Value) -> Vec<Problem> {
        let mut manifest = manifest.clone();
        strip_status(&mut manifest);
        self.strict
            .iter_errors(&manifest)
            .filter_map(|error| match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => Some(
                    unexpected
                        .iter()
                        .map(|field| {
                            let parent = field_path(&self.strict_schema, error.instance_path());
                            let path = join(&parent, field, true);
                            Problem::new("", format!("unknown field \"{path}\""))
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The object as the apiserver validates it: status dropped, nulls of non-nullable fields
    /// pruned, defaults applied.
    fn admitted(&self, manifest: &Value) -> Value {
        let mut object = manifest.clone();
        strip_status(&mut object);
        prune_nulls(&self.schema, &mut object);
        // kube-cel defaults the fields that were present; repeat so that defaults inside a
        // defaulted object are applied too, as the apiserver does.
        for _ in 0..8 {
            let next = apply_defaults(&self.schema, &object);
            if next == object {
                break;
            }
            object = next;
        }
        object
    }

    fn describe(&self, object: &Value, error: &jsonschema::ValidationError<'_>) -> Vec<Problem> {
        let location = error.instance_path();
        let path = field_path(&self.strict_schema, location);
        let value = error.instance();
        let message = match error.kind() {
            // Reported before, by `unknown_fields`.
            ValidationErrorKind::AdditionalProperties { .. } => return Vec::new(),
            ValidationErrorKind::Required { property } => {
                let property = property.as_str().unwrap_or_default();
                return vec![Problem::new(join(&path, property, true), "Required value")];
            }
            ValidationErrorKind::Type { .. } => {
                let expected = schema_at(&self.strict_schema, object, location)
                    .and_then(|s| s.get("type"))
                    .map(type_name)
                    .unwrap_or_else(|| "the declared type".into());
                format!("Invalid value: {}: must be of type {expected}", short(value))
            }
            ValidationErrorKind::Enum { options } => {
                let supported: Vec<String> =
                    options.as_array().map(|o| o.iter().map(|v| v.to_string()).collect()).unwrap_or_default();
                format!("Unsupported value: {}: supported values: {}", short(value), supported.join(", "))
            }
            ValidationErrorKind::Minimum { limit } => {
                format!("Invalid value: {value}: should be greater than or equal to {}", number(limit))
            }
            ValidationErrorKind::Maximum { limit } => {
                format!("Invalid value: {value}: should be less than or equal to {}", number(limit))
            }
            ValidationErrorKind::MinLength { limit } => {
                format!("Invalid value: {}: should be at least {limit} chars long", short(value))
            }
            ValidationErrorKind::MaxLength { limit } => {
                format!("Too long: may not be more than {limit} bytes")
            }
            ValidationErrorKind::MinItems { limit } => {
                let n = value.as_array().map_or(0, Vec::len);
                format!("Invalid value: {n}: should have at least {limit} items")
            }
            ValidationErrorKind::MaxItems { limit } => {
                let n = value.as_array().map_or(0, Vec::len);
                format!("Too many: {n}: must have at most {limit} items")
            }
            _ => format!("Invalid value: {}: {error}", short(value)),
        };
        vec![Problem::new(path, message)]
    }
}

/// The apiserver skips the CEL rules after these: the rules could not make sense of the object.
fn is_blocking(kind: &ValidationErrorKind) -> bool {
    matches!(
        kind,
        ValidationErrorKind::Type { .. }
            | ValidationErrorKind::Required { .. }
            | ValidationErrorKind::Enum { .. }
            | ValidationErrorKind::MaxLength { .. }
            | ValidationErrorKind::MaxItems { .. }
            | ValidationErrorKind::MaxProperties { .. }
    )
}

/// `plan` reads ImagingTenants only; anything else is named, not guessed at.
fn check_type(manifest: &Value) -> Result<(), Vec<Problem>> {
    let Some(object) = manifest.as_object() else {
        return Err(vec![Problem::new(
            "",
            "a manifest must be a YAML mapping with apiVersion, kind, metadata and spec",
        )]);
    };
    let expected_version = format!("{GROUP}/{VERSION}");
    let mut problems = Vec::new();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == expected_version => {}
        Some(v) => problems.push(Problem::new(
            "apiVersion",
            format!("must be {expected_version}, not {v:?}: plan reads only ImagingTenant manifests"),
        )),
        None => problems.push(Problem::new("apiVersion", format!("Required value: must be {expected_version}"))),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        Some(k) => problems
            .push(Problem::new("kind", format!("must be {KIND}, not {k:?}: plan reads only ImagingTenant manifests"))),
        None => problems.push(Problem::new("kind", format!("Required value: must be {KIND}"))),
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

struct NameCheck {
    problems: Vec<Problem>,
    blocking: bool,
}

/// `metadata.name` as the apiserver checks every custom resource's name (the CEL rules then add
/// the tenant's own: a DNS-1123 label of at most 40 characters).
fn check_name(object: &Value) -> NameCheck {
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name"));
    let problem = |message: String, blocking: bool| NameCheck {
        problems: vec![Problem::new("metadata.name", message)],
        blocking,
    };
    match name {
        None | Some(Value::Null) => {
            let generate_name = metadata.and_then(|m| m.get("generateName")).is_some();
            let message = if generate_name {
                "Required value: plan needs metadata.name: a tenant's name is part of its namespaces and AWS names, so set it rather than generateName"
            } else {
                "Required value: name or generateName is required"
            };
            problem(message.into(), true)
        }
        Some(Value::String(name)) if name.is_empty() => {
            problem("Required value: name or generateName is required".into(), true)
        }
        Some(Value::String(name)) => {
            let mut problems = Vec::new();
            if name.len() > 253 {
                problems.push(Problem::new(
                    "metadata.name",
                    format!("Invalid value: {name:?}: must be no more than 253 characters"),
                ));
            }
            if !is_dns1123_subdomain(name) {
                problems.push(Problem::new(
                    "metadata.name",
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                ));
            }
            NameCheck { problems, blocking: false }
        }
        Some(other) => problem(format!("Invalid value: {}: must be of type string", short(other)), true),
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    name.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
    })
}

/// The apiserver resets the status of a resource with a status subresource on create.
fn strip_status(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
}

/// Drops `null` from fields that are not nullable, as the apiserver does before defaulting.
fn prune_nulls(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            map.retain(|key, child| {
                let child_schema = properties.and_then(|p| p.get(key)).or(additional);
                !(child.is_null() && child_schema.is_some_and(|s| s.get("nullable") != Some(&Value::Bool(true))))
            });
            for (key, child) in map.iter_mut() {
                if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
                    prune_nulls(child_schema, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_nulls(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// A copy of the CRD schema that plain JSON Schema validates as the apiserver does: objects with
/// declared properties reject others (strict field validation), `nullable` admits null,
/// int-or-string admits both, and the root admits apiVersion, kind and metadata (the apiserver
/// checks those itself; `check_name` covers metadata.name).
pub(crate) fn strict_schema(schema: &Value) -> Value {
    let mut strict = schema.clone();
    make_strict(&mut strict);
    let root = strict.as_object_mut().expect("the CRD schema is an object");
    let properties =
        root.entry("properties").or_insert_with(|| json!({})).as_object_mut().expect("properties is an object");
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), json!({"type": "object"}));
    root.insert("additionalProperties".into(), Value::Bool(false));
    strict
}

fn make_strict(node: &mut Value) {
    let Some(object) = node.as_object_mut() else {
        return;
    };
    // Formats such as int32 are not checked by the apiserver for these fields; defaults and
    // rules are applied elsewhere.
    for annotation in ["format", "default", "x-kubernetes-validations"] {
        object.remove(annotation);
    }
    if object.remove("x-kubernetes-int-or-string") == Some(Value::Bool(true)) {
        object.insert("type".into(), json!(["integer", "string"]));
    }
    if object.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(t)) = object.get("type").cloned()
    {
        object.insert("type".into(), json!([t, "null"]));
    }
    let preserve_unknown = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if object.contains_key("properties") && !object.contains_key("additionalProperties") && !preserve_unknown {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(make_strict);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = object.get_mut(key) {
            make_strict(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = object.get_mut(key) {
            branches.iter_mut().for_each(make_strict);
        }
    }
}

/// The field path in the apiserver's notation: declared fields joined with `.`, list indexes
/// and map keys in brackets (`spec.quota.hard[requests.cpu]`).
pub(crate) fn field_path(schema: &Value, location: &Location) -> String {
    let mut path = String::new();
    let mut node = Some(schema);
    for segment in location.iter() {
        match segment {
            LocationSegment::Index(i) => {
                path.push_str(&format!("[{i}]"));
                node = node.and_then(|n| n.get("items"));
            }
            LocationSegment::Property(key) => {
                let declared = node.and_then(|n| n.get("properties")).and_then(|p| p.get(key.as_ref()));
                match declared {
                    Some(child) => {
                        path = join(&path, &key, true);
                        node = Some(child);
                    }
                    None => {
                        path = join(&path, &key, false);
                        node = node.and_then(|n| n.get("additionalProperties"));
                    }
                }
            }
        }
    }
    path
}

fn join(parent: &str, key: &str, declared: bool) -> String {
    match (parent.is_empty(), declared) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key}]"),
    }
}

/// The schema node that describes the value at `location`.
fn schema_at<'a>(schema: &'a Value, object: &Value, location: &Location) -> Option<&'a Value> {
    let mut node = schema;
    let mut value = object;
    for segment in location.iter() {
        match segment {
            LocationSegment::Index(i) => {
                node = node.get("items")?;
                value = value.get(i)?;
            }
            LocationSegment::Property(key) => {
                node = node
                    .get("properties")
                    .and_then(|p| p.get(key.as_ref()))
                    .or_else(|| node.get("additionalProperties"))?;
                value = value.get(key.as_ref())?;
            }
        }
    }
    Some(node)
}

/// `integer`, `integer or string`; `null` is left out: it is never what a person means.
fn type_name(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Array(types) => {
            types.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect::<Vec<_>>().join(" or ")
        }
        other => other.to_string(),
    }
}

/// `30.0` in a schema is the integer 30 to a person.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// A value as an error message shows it: scalars as JSON, containers by their type only.
fn short(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(spec: Value) -> Value {
        json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": "group-a"},
            "spec": spec,
        })
    }

    fn problems(manifest: Value) -> Vec<String> {
        TenantRules::new()
            .check_create(&manifest)
            .expect_err("the manifest is invalid")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_rule_of_the_crd_compiles() {
        assert_eq!(TenantRules::new().rule_compilation_errors(), Vec::<String>::new());
    }

    #[test]
    fn a_minimal_tenant_is_valid_and_defaulted() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let t = TenantRules::new().check_create(&tenant(json!({}))).unwrap();
        assert_eq!(t.tenant_name(), "group-a");
        assert!(t.spec.storage.versioning);
        assert_eq!(t.spec.encryption.deletion_window_days, 30);
        assert_eq!(t.spec.quota.hard.len(), 6);
        for exposed in ["services.loadbalancers", "services.nodeports"] {
            assert_eq!(t.spec.quota.hard[exposed], IntOrString::String("0".into()), "{exposed}");
        }
    }

    #[test]
    fn a_rule_on_a_list_item_names_its_index() {
        let p = problems(tenant(json!({"namespaces": [{"name": "group-a"}, {"name": "group-a-AI"}]})));
        assert_eq!(
            p,
            [
                "spec.namespaces[1].name: namespace name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"
            ]
        );
    }

    #[test]
    fn a_schema_error_in_a_map_names_the_key_in_brackets() {
        let p = problems(tenant(json!({"quota": {"hard": {"requests.cpu": true}}})));
        assert_eq!(p[0], "spec.quota.hard[requests.cpu]: Invalid value: true: must be of type integer or string");
        assert_eq!(p.last().unwrap(), RULES_NOT_CHECKED);
    }

    #[test]
    fn an_unknown_field_is_named_with_its_full_path_and_stops_validation() {
        let p = problems(tenant(json!({
            "storage": {"lifecycle": {"expireAfterDays": 30}},
            "encryption": {"deletionWindowDays": 3},
        })));
        assert_eq!(p, [r#"unknown field "spec.storage.lifecycle.expireAfterDays""#]);
    }

    #[test]
    fn an_unknown_field_in_a_list_item_names_its_index() {
        let p = problems(tenant(json!({"namespaces": [{"name": "group-a", "labels": {}}]})));
        assert_eq!(p, [r#"unknown field "spec.namespaces[0].labels""#]);
    }

    #[test]
    fn range_errors_use_the_apiservers_words_and_do_not_block_the_rules() {
        let p = problems(tenant(json!({
            "encryption": {"deletionWindowDays": 6},
            "tags": {"aws:owner": "x"},
        })));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0], "spec.encryption.deletionWindowDays: Invalid value: 6: should be greater than or equal to 7");
        assert!(p[1].starts_with("spec.tags: spec.tags keys must not start with 'aws:'"), "{p:?}");
    }

    #[test]
    fn a_missing_required_field_is_named_and_blocks_the_rules() {
        let p = problems(tenant(json!({"access": {"admins": [{"kind": "Group"}]}})));
        assert_eq!(p, ["spec.access.admins[0].name: Required value", RULES_NOT_CHECKED]);
    }

    #[test]
    fn an_unsupported_value_lists_the_supported_ones() {
        let p = problems(tenant(json!({"deletionPolicy": "delete"})));
        assert_eq!(p[0], r#"spec.deletionPolicy: Unsupported value: "delete": supported values: "Retain", "Delete""#);
    }

    #[test]
    fn root_rules_see_metadata_name() {
        let mut m = tenant(json!({}));
        m["metadata"]["name"] = json!("kube-imaging");
        let p = problems(m);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("metadata.name must not be 'default'"), "{p:?}");
    }

    #[test]
    fn a_missing_name_is_required() {
        let mut m = tenant(json!({}));
        m["metadata"] = json!({});
        assert_eq!(problems(m), ["metadata.name: Required value: name or generateName is required", RULES_NOT_CHECKED]);
    }

    #[test]
    fn other_kinds_are_refused_by_name() {
        let p = problems(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
        assert_eq!(p.len(), 2);
        assert!(p[0].starts_with("apiVersion: must be imaging.tenancy.dev/v1alpha1, not \"v1\""), "{p:?}");
        assert!(p[1].starts_with("kind: must be ImagingTenant, not \"Namespace\""), "{p:?}");
    }

    #[test]
    fn null_in_a_defaulted_field_gets_the_default() {
        let t = TenantRules::new().check_create(&tenant(json!({"encryption": null, "deletionPolicy": null}))).unwrap();
        assert_eq!(t.spec.encryption.deletion_window_days, 30);
    }

    #[test]
    fn quota_values_may_be_integers_or_quantity_strings() {
        let rules = TenantRules::new();
        let quota = json!({"quota": {"hard": {"pods": 20, "requests.cpu": "500m"}, "defaultLimit": {"cpu": 1}}});
        assert!(rules.check_create(&tenant(quota)).is_ok());
        let p = problems(tenant(json!({"quota": {"hard": {"pods": "twenty"}}})));
        assert_eq!(
            p,
            ["spec.quota.hard: quota.hard values must be Kubernetes quantities such as \"8\", 500m, 32Gi or 1Ti"]
        );
    }

    #[test]
    fn status_is_ignored_on_create() {
        let mut m = tenant(json!({}));
        m["status"] = json!({"observedGeneration": "not a number"});
        assert!(TenantRules::new().check_create(&m).is_ok());
    }

    #[test]
    fn transition_rules_apply_only_to_updates() {
        let rules = TenantRules::new();
        let old = tenant(json!({"storage": {"retention": {"mode": "Compliance", "days": 30}}}));
        let new = tenant(json!({"storage": {"retention": {"mode": "Governance", "days": 30}}}));
        assert!(rules.check_create(&new).is_ok());
        let p = rules.check_update(&new, &old).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "spec.storage.retention");
        assert!(p[0].message.contains("cannot change from Compliance to Governance"));
    }
}
