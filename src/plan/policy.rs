//! Semantic equality of IAM policy documents: the forms AWS rewrites a document into compare equal.

use serde_json::{Map, Value};

/// Keys whose values IAM treats as unordered sets, where one value and a one-element list mean the same.
const SET_KEYS: [&str; 8] =
    ["Action", "NotAction", "Resource", "NotResource", "AWS", "Service", "Federated", "CanonicalUser"];

/// A canonical form: statements as a list, set-like values sorted and deduplicated with single values unwrapped,
/// scalars as strings (IAM returns `true` as `"true"`), object keys sorted.
pub fn normalize(document: &Value) -> Value {
    let mut document = canonical(document, None);
    if let Some(Value::Object(statement)) = document.get("Statement").cloned() {
        document["Statement"] = Value::Array(vec![Value::Object(statement)]);
    }
    document
}

fn canonical(value: &Value, key: Option<&str>) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k.clone(), canonical(v, Some(k)));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|v| canonical(v, key)).collect();
            let is_set = key.is_some_and(|k| SET_KEYS.contains(&k)) || key.is_some_and(is_condition_operand);
            if is_set {
                items.sort_by_key(|v| v.to_string());
                items.dedup();
                if items.len() == 1 {
                    return items.pop().expect("one item");
                }
            }
            Value::Array(items)
        }
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        other => other.clone(),
    }
}

/// Condition keys (`aws:SourceAccount`, `s3:prefix` …) hold sets of values too.
fn is_condition_operand(key: &str) -> bool {
    key.contains(':')
}

/// Whether two documents grant the same thing, as far as the representation goes.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aws_rewrites_compare_equal() {
        let written = json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"],
                          "Condition": {"Bool": {"aws:SecureTransport": true}}}
        });
        let returned = json!({
            "Statement": [{"Resource": "arn:aws:s3:::b/*", "Action": "s3:GetObject", "Effect": "Allow",
                           "Condition": {"Bool": {"aws:SecureTransport": "true"}}}],
            "Version": "2012-10-17"
        });
        assert!(equivalent(&written, &returned));
    }

    #[test]
    fn real_changes_differ() {
        let a = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"}]});
        let b = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "*"}]});
        let c = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]});
        assert!(equivalent(&a, &b));
        assert!(!equivalent(&a, &c));
    }
}
