//! Every protocol message shown in `docs/PROTOCOL.md` parses into the protocol's types, and
//! says nothing the types would drop: each example must be contained in what its parsed
//! message serializes back to. So the document cannot drift from the code unnoticed.

// A panic is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_protocol::{AgentMessage, HostMessage};
use serde_json::Value;

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// One example: where it is in the document and its text.
struct Example {
    line: usize,
    text: String,
}

/// The lines of every ```json block, and every inline code span that is a tagged message
/// (starts with `{"type"`).
fn examples(doc: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut in_json = false;
    for (index, line) in doc.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_json = !in_json && trimmed == "```json";
            continue;
        }
        if in_json {
            if !trimmed.is_empty() {
                found.push(Example {
                    line: number,
                    text: trimmed.to_owned(),
                });
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            // Odd pieces are inside backticks.
            if i % 2 == 1 && span.starts_with("{\"type\"") {
                found.push(Example {
                    line: number,
                    text: span.to_owned(),
                });
            }
        }
    }
    found
}

/// Why `text` is not a protocol message the types fully keep, or `None` when it is.
fn check(text: &str) -> Option<String> {
    let example: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    let reserialized = match serde_json::from_str::<HostMessage>(text) {
        Ok(msg) => serde_json::to_value(msg).unwrap(),
        Err(host_err) => match serde_json::from_str::<AgentMessage>(text) {
            Ok(msg) => serde_json::to_value(msg).unwrap(),
            Err(agent_err) => {
                return Some(format!(
                    "neither a host message ({host_err}) nor an agent message ({agent_err})"
                ));
            }
        },
    };
    contained(&example, &reserialized, "")
}

/// Where `example` says something `actual` does not (a field the types drop or change).
fn contained(example: &Value, actual: &Value, path: &str) -> Option<String> {
    match (example, actual) {
        (Value::Object(ex), Value::Object(act)) => ex.iter().find_map(|(key, value)| {
            let path = format!("{path}.{key}");
            match act.get(key) {
                Some(actual) => contained(value, actual, &path),
                None => Some(format!("`{path}` is not a field of the message")),
            }
        }),
        (Value::Array(ex), Value::Array(act)) if ex.len() == act.len() => ex
            .iter()
            .zip(act)
            .enumerate()
            .find_map(|(i, (e, a))| contained(e, a, &format!("{path}[{i}]"))),
        _ if example == actual => None,
        _ => Some(format!("`{path}` reads back as {actual}, not {example}")),
    }
}

#[test]
fn every_example_in_protocol_md_is_a_protocol_message() {
    let examples = examples(PROTOCOL_MD);
    assert!(
        examples.len() >= 8,
        "found only {} examples in docs/PROTOCOL.md; did the extraction break?",
        examples.len()
    );
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|ex| {
            check(&ex.text).map(|why| format!("docs/PROTOCOL.md:{}: {why}\n  {}", ex.line, ex.text))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checker_rejects_unknown_types_and_dropped_fields() {
    assert!(check(r#"{"type":"shutdown"}"#).is_none());
    assert!(check(r#"{"type":"reboot"}"#).is_some());
    assert!(check(r#"{"type":"fatal","error":"x","reason":"y"}"#).is_some());
    assert!(check(r#"{"type":"fatal"}"#).is_some());
    let found = examples("a `{\"type\":\"shutdown\"}` b\n```json\n{\"type\":\"x\"}\n```\n`{}`\n");
    let lines: Vec<usize> = found.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 3]);
}
