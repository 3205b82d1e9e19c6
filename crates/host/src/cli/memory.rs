//! `nanoclaw memory …`: what the agents keep in a group's memory store — search it, list it,
//! forget a memory. Like `tasks`, it opens the database directly (a running host need not be
//! told: agents search the store on every request).

use std::process::ExitCode;

use nanoclaw_host::memory::memory_view;
use nanoclaw_store::{Memory, MemoryQuery};

fn print_table(memories: &[&Memory]) {
    println!("{:<8} {:<20} {:<20} text", "id", "namespace", "saved");
    for m in memories {
        let saved = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m.created_at)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        // One line per memory: its first line, cut for the terminal.
        let first = m.text.lines().next().unwrap_or("");
        let mut text: String = first.chars().take(100).collect();
        if text.len() < m.text.len() {
            text.push('…');
        }
        println!("{:<8} {:<20} {:<20} {text}", m.id, m.namespace, saved);
    }
}

/// `nanoclaw memory search <query>`.
pub async fn search(
    query: String,
    folder: Option<String>,
    namespace: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let group = super::group_or_main(&store, folder).await?;
    let hits = store
        .search_memories(MemoryQuery {
            group_id: group.id.clone(),
            query,
            namespace,
            limit,
        })
        .await?;
    if json {
        let rows: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                let mut v = memory_view(&h.memory);
                v["score"] = serde_json::json!(h.score);
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "group": group.folder,
                "results": rows,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        println!("no memory of group {:?} matches", group.folder);
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&hits.iter().map(|h| &h.memory).collect::<Vec<_>>());
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw memory list`: most recent first.
pub async fn list(
    folder: Option<String>,
    namespace: Option<String>,
    limit: usize,
    before: Option<i64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let group = super::group_or_main(&store, folder).await?;
    let memories = store
        .list_memories(group.id.clone(), namespace, before, limit)
        .await?;
    let total = store.count_memories(group.id.clone()).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "group": group.folder,
                "total": total,
                "memories": memories.iter().map(memory_view).collect::<Vec<_>>(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if memories.is_empty() {
        println!("group {:?} keeps no memories", group.folder);
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&memories.iter().collect::<Vec<_>>());
    if let Some(last) = memories.last()
        && memories.len() == limit
    {
        println!(
            "({total} in all; older: `nanoclaw memory list --before {}`)",
            last.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw memory forget <id>`: only within the group (main unless `--group`).
pub async fn forget(id: i64, folder: Option<String>) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let group = super::group_or_main(&store, folder).await?;
    if store.forget_memory(group.id.clone(), id).await? {
        println!("forgot memory {id} of group {:?}", group.folder);
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "group {:?} has no memory {id}; see `nanoclaw memory list --group {}`",
            group.folder,
            group.folder
        )
    }
}
