//! Policy documents compared as AWS reads them, not as text: statement order, the order of
//! values in a list, a single value versus a one-element list, `true` versus `"true"`, the case
//! of condition keys and IAM's URL encoding make no difference. So an equal policy is never
//! rewritten (invariant 8) and a changed one always is.

use serde_json::{Map, Value};

/// Parses a policy as AWS returns it: JSON, or URL-encoded JSON (IAM).
pub fn parse(document: &str) -> Result<Value, String> {
    match serde_json::from_str(document) {
        Ok(value) => Ok(value),
        Err(first) => {
            let decoded =
                urlencoding::decode(document).map_err(|e| format!("not JSON ({first}) nor URL-encoded JSON ({e})"))?;
            serde_json::from_str(&decoded).map_err(|e| format!("not JSON: {e}"))
        }
    }
}

/// Whether two policies grant and deny the same.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

/// How `found` differs from `wanted`, statement by statement (compared as [`equivalent`]
/// compares): the statements that are not the wanted ones, and the wanted ones missing, by Sid.
pub(crate) fn difference(found: &Value, wanted: &Value) -> String {
    let statements = |p: &Value| -> Vec<(Value, Value)> {
        let listed = p.get("Statement").map(one_or_many).unwrap_or_default();
        listed.into_iter().map(|s| (statement(&s), s)).collect()
    };
    let (found, wanted) = (statements(found), statements(wanted));
    let other: Vec<&Value> =
        found.iter().filter(|(f, _)| !wanted.iter().any(|(w, _)| w == f)).map(|(_, s)| s).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(w, _)| !found.iter().any(|(f, _)| f == w))
        .map(|(_, s)| s["Sid"].as_str().map_or_else(|| s.to_string(), str::to_string))
        .collect();
    let mut parts = Vec::new();
    if !other.is_empty() {
        parts.push(format!("statements not the operator's: {}", Value::Array(other.into_iter().cloned().collect())));
    }
    if !missing.is_empty() {
        parts.push(format!("the operator's statements missing or changed: {}", missing.join(", ")));
    }
    if parts.is_empty() { "the same statements in another document".into() } else { parts.join("; ") }
}

/// The canonical form compared by [`equivalent`].
pub(crate) fn normalize(policy: &Value) -> Value {
    let Some(doc) = policy.as_object() else {
        return scalar(policy);
    };
    let mut out = Map::new();
    for (key, value) in doc {
        let value = if key == "Statement" {
            let mut statements: Vec<Value> = one_or_many(value).iter().map(statement).collect();
            statements.sort_by_key(|s| s.to_string());
            statements.dedup();
            Value::Array(statements)
        } else {
            scalar(value)
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

fn statement(statement: &Value) -> Value {
    let Some(fields) = statement.as_object() else {
        return scalar(statement);
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let value = match key.as_str() {
            "Action" | "NotAction" | "Resource" | "NotResource" => set(value),
            "Principal" | "NotPrincipal" => match value {
                Value::Object(principals) => {
                    Value::Object(principals.iter().map(|(kind, ids)| (kind.clone(), set(ids))).collect())
                }
                other => scalar(other),
            },
            "Condition" => match value {
                Value::Object(operators) => Value::Object(
                    operators
                        .iter()
                        .map(|(operator, keys)| {
                            let keys = match keys {
                                Value::Object(keys) => Value::Object(
                                    // Condition keys are case-insensitive; values are not.
                                    keys.iter().map(|(k, v)| (k.to_ascii_lowercase(), set(v))).collect(),
                                ),
                                other => scalar(other),
                            };
                            (operator.clone(), keys)
                        })
                        .collect(),
                ),
                other => scalar(other),
            },
            _ => scalar(value),
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

fn one_or_many(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// A value or list of values as a sorted list of strings without duplicates.
fn set(value: &Value) -> Value {
    let mut items: Vec<String> = one_or_many(value).iter().map(text).collect();
    items.sort();
    items.dedup();
    Value::Array(items.into_iter().map(Value::String).collect())
}

fn scalar(value: &Value) -> Value {
    match value {
        Value::Bool(_) | Value::Number(_) => Value::String(text(value)),
        Value::Array(items) => Value::Array(items.iter().map(scalar).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()),
        other => other.clone(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_and_single_values_do_not_matter() {
        let a = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:x"},
            {"Sid": "B", "Effect": "Deny", "Principal": {"AWS": "arn:r"}, "Action": "s3:*", "Resource": ["arn:y"],
             "Condition": {"Bool": {"aws:SecureTransport": false}}},
        ]});
        let b = json!({"Statement": [
            {"Effect": "Deny", "Sid": "B", "Principal": {"AWS": ["arn:r"]}, "Action": ["s3:*"], "Resource": "arn:y",
             "Condition": {"Bool": {"aws:securetransport": "false"}}},
            {"Resource": ["arn:x"], "Action": ["s3:PutObject", "s3:GetObject"], "Effect": "Allow", "Sid": "A"},
        ], "Version": "2012-10-17"});
        assert!(equivalent(&a, &b));
    }

    #[test]
    fn the_difference_names_foreign_statements_and_missing_sids() {
        let wanted = json!({"Statement": [
            {"Sid": "A", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:x"},
            {"Sid": "B", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:x"},
        ]});
        let found = json!({"Statement": [
            {"Sid": "B", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:x"},
            {"Sid": "T", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        ]});
        let d = difference(&found, &wanted);
        assert!(d.contains(r#""Sid":"T""#) && !d.contains(r#""Sid":"B""#), "{d}");
        assert!(d.ends_with("the operator's statements missing or changed: A"), "{d}");
        assert_eq!(difference(&wanted, &wanted), "the same statements in another document");
    }

    #[test]
    fn a_changed_value_is_a_difference() {
        let a = json!({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:x"}]});
        let b = json!({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:z"}]});
        let c = json!({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:x"}]});
        let d = json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:x"},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
        ]});
        assert!(!equivalent(&a, &b));
        assert!(!equivalent(&a, &c));
        assert!(!equivalent(&a, &d));
    }

    #[test]
    fn iam_url_encoded_documents_are_decoded() {
        let doc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(parse(doc).unwrap(), json!({"Version": "2012-10-17", "Statement": []}));
        assert!(parse("not a policy").is_err());
    }
}
