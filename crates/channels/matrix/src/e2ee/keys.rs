//! Signed JSON (<https://spec.matrix.org/v1.12/appendices/#signing-json>): the canonical
//! form (keys sorted by code point, no whitespace), an object's signable part (without
//! `signatures` and `unsigned`), and ed25519 signatures over it.

use serde_json::{Map, Value};
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

/// The canonical JSON text of `v`.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(value) = map.get(key) {
                    write(value, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The text a signature of `object` covers.
pub fn signable(object: &Value) -> String {
    let mut copy = object.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("signatures");
        map.remove("unsigned");
    }
    canonical(&copy)
}

/// Adds `signatures.{user}.{key_id}` to `object`.
pub fn add_signature(object: &mut Value, user: &str, key_id: &str, signature: &Ed25519Signature) {
    let Value::Object(map) = object else {
        return;
    };
    let signatures = map
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(by_user) = signatures {
        let mine = by_user
            .entry(user.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(mine) = mine {
            mine.insert(key_id.to_owned(), Value::String(signature.to_base64()));
        }
    }
}

/// Whether `object` carries a valid signature by `key` under `signatures.{user}.{key_id}`.
pub fn verify(object: &Value, user: &str, key_id: &str, key: &Ed25519PublicKey) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(user))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .and_then(|s| Ed25519Signature::from_base64(s).ok())
    else {
        return false;
    };
    key.verify(signable(object).as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, "x"], "c": null}, "é": "ü"});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"z":[1,"x"]},"b":1,"é":"ü"}"#
        );
    }

    #[test]
    fn a_signature_verifies_and_a_changed_object_does_not() {
        let account = vodozemac::olm::Account::new();
        let mut object = json!({"user_id": "@a:hs", "keys": {"k": "v"}, "unsigned": {"x": 1}});
        let signature = account.sign(signable(&object));
        add_signature(&mut object, "@a:hs", "ed25519:DEV", &signature);
        let key = account.ed25519_key();
        assert!(verify(&object, "@a:hs", "ed25519:DEV", &key));
        // `unsigned` is not covered.
        object["unsigned"] = json!({"y": 2});
        assert!(verify(&object, "@a:hs", "ed25519:DEV", &key));
        object["keys"]["k"] = json!("w");
        assert!(!verify(&object, "@a:hs", "ed25519:DEV", &key));
        assert!(!verify(&object, "@b:hs", "ed25519:DEV", &key));
    }
}
