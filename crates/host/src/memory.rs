//! The group memory store as agents and the owner see it. The store (`nanoclaw_store`'s
//! memories) keeps and searches them; agents reach them with `memory_*` requests (answered
//! in `host::requests` from the session's own group only) and the owner with
//! `nanoclaw memory …`.

/// A memory as the agent (and `nanoclaw memory … --json`) sees it.
pub fn memory_view(m: &nanoclaw_store::Memory) -> serde_json::Value {
    let saved = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m.created_at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    serde_json::json!({
        "id": m.id,
        "namespace": m.namespace,
        "text": m.text,
        "saved_at": saved,
    })
}
