//! Reading manifests: a multi-document YAML stream, as `kubectl apply -f` reads it.

use serde::Deserialize;
use serde_json::Value;

/// One non-empty document of the input, numbered from 1 in the order it appears.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub(crate) number: usize,
    pub value: Value,
}

impl Document {
    /// `metadata.name` as written, if it is a string.
    pub(crate) fn name(&self) -> Option<&str> {
        self.value.get("metadata")?.get("name")?.as_str()
    }

    /// How errors name the document: `document 2 (group-b)`, or `document 2` without a name.
    pub(crate) fn label(&self) -> String {
        match self.name() {
            Some(name) if !name.is_empty() => format!("document {} ({name})", self.number),
            _ => format!("document {}", self.number),
        }
    }
}

/// Splits a YAML stream into documents, skipping empty ones (a stray `---`, comments only).
/// Merge keys (`<<:`) are resolved, as kubectl does. Errors describe the YAML syntax problem with
/// its line and column.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    let mut documents = Vec::new();
    for deserializer in serde_yaml::Deserializer::from_str(text) {
        let mut value = serde_yaml::Value::deserialize(deserializer).map_err(|e| format!("YAML syntax error: {e}"))?;
        if value.is_null() {
            continue;
        }
        let number = documents.len() + 1;
        value.apply_merge().map_err(|e| format!("document {number}: YAML merge key error: {e}"))?;
        let value = serde_json::to_value(&value)
            .map_err(|e| format!("document {number}: cannot be represented as JSON, as Kubernetes requires: {e}"))?;
        documents.push(Document { number, value });
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_documents_are_skipped_and_the_rest_numbered_in_order() {
        let docs = parse_documents("---\n# only a comment\n---\nmetadata: {name: a}\n---\n---\nmetadata: {name: b}\n")
            .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].label(), "document 1 (a)");
        assert_eq!(docs[1].label(), "document 2 (b)");
    }

    #[test]
    fn a_document_without_a_name_is_labelled_by_number_only() {
        let docs = parse_documents("kind: ImagingTenant\n").unwrap();
        assert_eq!(docs[0].label(), "document 1");
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse_documents("metadata:\n  name: [a\n").unwrap_err();
        assert!(err.starts_with("YAML syntax error"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn merge_keys_are_resolved() {
        let docs = parse_documents("base: &b {x: 1}\nspec:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(docs[0].value["spec"], serde_json::json!({"x": 1, "y": 2}));
    }
}
