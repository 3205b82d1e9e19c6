//! What an agent may ask the host for, checked in one place. The agent is untrusted: it may
//! only message the chat its turn came from, within size limits; admin requests are for the
//! owner's main group; a group manages only its own scheduled tasks (the main group every
//! group's) and has room for a limited number of them.

use std::collections::HashMap;
use std::sync::Arc;

use nanoclaw_protocol::RequestAction;
use nanoclaw_store::{Chat, Group, NewGroup, NewOutbound, OutboundKind, SessionMode, Store, Task};

use super::Inner;
use super::turn::{TurnMessages, remember_answers};
use crate::group_settings::{GroupSettings, SettingChange};
use crate::tasks::{Scheduler, TaskError};

/// Longest text the agent may send through `send_message`.
const MAX_AGENT_MESSAGE_BYTES: usize = 64 * 1024;

/// Checks and performs something the agent asked for during a turn.
pub(super) async fn handle_request(
    inner: &Arc<Inner>,
    session_id: &str,
    group: &Group,
    chat: &Chat,
    turn: TurnMessages<'_>,
    sent_messages: &mut u32,
    action: RequestAction,
) -> Result<serde_json::Value, String> {
    match action {
        RequestAction::SendMessage { text, files } => {
            let message = SendRequest { text, files };
            send_message(inner, session_id, group, chat, turn, sent_messages, message).await
        }
        RequestAction::ListGroups => {
            require_main(group, "list_groups")?;
            list_groups(&inner.store)
                .await
                .map_err(|e| format!("could not read the groups: {e}"))
        }
        RequestAction::RegisterChat {
            channel,
            chat_id,
            folder,
            name,
            requires_trigger,
        } => {
            require_main(group, "register_chat")?;
            register_chat(inner, channel, chat_id, folder, name, requires_trigger).await
        }
        RequestAction::UpdateGroup {
            group: target,
            trigger,
            provider,
            model,
            timezone,
        } => {
            let settings = GroupSettings {
                provider,
                model,
                trigger,
                timezone,
            };
            update_group(&inner.store, group, target, settings).await
        }
        action @ (RequestAction::ScheduleTask { .. }
        | RequestAction::ListTasks
        | RequestAction::UpdateTask { .. }
        | RequestAction::PauseTask { .. }
        | RequestAction::ResumeTask { .. }
        | RequestAction::CancelTask { .. }) => {
            task_request(&inner.store, &inner.tasks, group, chat, action).await
        }
        action @ (RequestAction::MemorySave { .. }
        | RequestAction::MemorySearch { .. }
        | RequestAction::MemoryForget { .. }) => memory_request(&inner.store, group, action).await,
    }
}

/// Results `memory_search` returns when the agent names no limit.
const DEFAULT_MEMORY_RESULTS: usize = 10;

/// An agent's memory request, answered from its own group's memories only: the group is the
/// session's, never named by the agent, and another group's memory id reads as unknown.
async fn memory_request(
    store: &Store,
    group: &Group,
    action: RequestAction,
) -> Result<serde_json::Value, String> {
    match action {
        RequestAction::MemorySave { text, namespace } => {
            let saved = store
                .save_memory(nanoclaw_store::NewMemory {
                    group_id: group.id.clone(),
                    namespace: namespace.clone(),
                    text,
                    now_ms: nanoclaw_store::now_ms(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let namespace = namespace.unwrap_or_else(|| nanoclaw_store::SHARED_NAMESPACE.into());
            tracing::debug!(group = %group.folder, id = saved, %namespace, "memory saved");
            Ok(serde_json::json!({ "id": saved, "namespace": namespace }))
        }
        RequestAction::MemorySearch {
            query,
            namespace,
            limit,
        } => {
            let limit = limit.map_or(DEFAULT_MEMORY_RESULTS, |l| l as usize);
            let hits = store
                .search_memories(nanoclaw_store::MemoryQuery {
                    group_id: group.id.clone(),
                    query,
                    namespace,
                    limit,
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::Value::Array(
                hits.iter()
                    .map(|h| crate::memory::memory_view(&h.memory))
                    .collect(),
            ))
        }
        RequestAction::MemoryForget { id } => {
            let forgotten = store
                .forget_memory(group.id.clone(), id)
                .await
                .map_err(|e| e.to_string())?;
            if forgotten {
                tracing::debug!(group = %group.folder, id, "memory forgotten");
                Ok(serde_json::json!({ "forgotten": id }))
            } else {
                Err(format!("no memory {id} in this group; see memory_search"))
            }
        }
        other => Err(format!("not a memory request: {other:?}")),
    }
}

/// What the agent asked `send_message` to send.
struct SendRequest {
    text: String,
    /// Paths as the agent sees them; checked and copied by [`crate::outbox::take_files`].
    files: Vec<String>,
}

/// `send_message`: a message to the turn's own chat, within the size limit, with the files
/// the agent named copied into the host's outbox (all or nothing).
async fn send_message(
    inner: &Arc<Inner>,
    session_id: &str,
    group: &Group,
    chat: &Chat,
    turn: TurnMessages<'_>,
    sent_messages: &mut u32,
    message: SendRequest,
) -> Result<serde_json::Value, String> {
    let TurnMessages { first_id, answers } = turn;
    let SendRequest { text, files } = message;
    if text.trim().is_empty() && files.is_empty() {
        return Err("send_message needs non-empty text or files".into());
    }
    if text.len() > MAX_AGENT_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes refused; the limit is {MAX_AGENT_MESSAGE_BYTES}",
            text.len()
        ));
    }
    let taken = take_files(inner, group, files).await?;
    *sent_messages += 1;
    // Keyed by the turn's first message and its position in the turn, so a turn
    // retried after a crash does not send the same message twice.
    let key = format!("msg:{session_id}:{first_id}:{sent_messages}");
    let row = inner
        .store
        .insert_outbound(NewOutbound {
            session_id: Some(session_id.to_owned()),
            chat_id: chat.id,
            in_reply_to: Some(first_id),
            idempotency_key: key,
            text,
            kind: OutboundKind::Message,
            files: taken.as_ref().map(|t| t.files.clone()).unwrap_or_default(),
        })
        .await;
    let row = match row {
        Ok(row) => row,
        Err(e) => {
            forget_copies(taken).await;
            return Err(format!("could not queue the message: {e}"));
        }
    };
    match &row {
        Some(row) => remember_answers(inner, row.id, answers),
        // Already queued by an earlier try of this turn, with its own copies.
        None => forget_copies(taken).await,
    }
    inner.delivery_wake.notify_one();
    Ok(serde_json::json!({ "queued": row.is_some() }))
}

/// The agent's files checked and copied into the outbox, on the blocking pool; `None` when
/// there are none.
async fn take_files(
    inner: &Arc<Inner>,
    group: &Group,
    files: Vec<String>,
) -> Result<Option<crate::outbox::Taken>, String> {
    if files.is_empty() {
        return Ok(None);
    }
    let group_dir = inner.paths.group_dir(&group.folder);
    let outbox = inner.paths.outbox_dir();
    let max_bytes = inner.config.channels.max_outgoing_file_bytes;
    let waiting = inner
        .store
        .pending_outbound_file_bytes()
        .await
        .map_err(|e| format!("could not check the host's room for files: {e}"))?;
    let room = max_bytes
        .saturating_mul(crate::outbox::OUTBOX_CAP_FILES)
        .saturating_sub(waiting);
    // A refusal is logged with the other refused requests (within the agent's log budget).
    tokio::task::spawn_blocking(move || {
        crate::outbox::take_files(&group_dir, &outbox, &files, max_bytes, room)
    })
    .await
    .map_err(|e| format!("checking the files stopped unexpectedly: {e}"))?
    .map(Some)
    .map_err(|e| e.to_string())
}

/// Removes copies whose message was not queued.
async fn forget_copies(taken: Option<crate::outbox::Taken>) {
    if let Some(taken) = taken {
        let _ = tokio::task::spawn_blocking(move || crate::outbox::remove_dir(&taken.dir)).await;
    }
}

/// The task and run an inbound row carries out.
pub(super) async fn task_for_run(
    inner: &Arc<Inner>,
    run_id: i64,
) -> Option<(nanoclaw_store::Task, nanoclaw_store::TaskRunRow)> {
    let run = inner.store.task_run(run_id).await.ok().flatten()?;
    let task = inner.store.task(run.task_id.clone()).await.ok().flatten()?;
    Some((task, run))
}

/// Admin actions are for the owner's main group only; other groups see just their own
/// folder.
fn require_main(group: &Group, action: &str) -> Result<(), String> {
    if group.is_main {
        Ok(())
    } else {
        tracing::warn!(group = %group.folder, action, "refused an admin request from a non-main group");
        Err(format!(
            "{action} is only available to the owner's main group; this is group {:?}",
            group.folder
        ))
    }
}

/// `update_group`: the owner, through the main group's agent, changes a group's trigger, model or
/// zone. Every attempt is recorded in the audit log — refused ones too, since an agent tricked by
/// something it read is exactly what the owner wants to see there.
async fn update_group(
    store: &Store,
    asking: &Group,
    target: Option<String>,
    settings: GroupSettings,
) -> Result<serde_json::Value, String> {
    let folder = target.unwrap_or_else(|| asking.folder.clone());
    let outcome: Result<Vec<SettingChange>, String> = async {
        require_main(asking, "update_group")?;
        if settings.is_empty() {
            return Err(
                "update_group needs at least one of trigger, provider, model, timezone".into(),
            );
        }
        let mut group = store
            .group_by_folder(folder.as_str())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no agent group with folder {folder:?}; see list_groups"))?;
        let changes = settings.apply(&mut group)?;
        if !changes.is_empty() {
            store
                .update_group(&group)
                .await
                .map_err(|e| format!("could not save the group: {e}"))?;
        }
        Ok(changes)
    }
    .await;
    let reason = match &outcome {
        Ok(changes) if changes.is_empty() => {
            format!("update_group by {}: no change", asking.folder)
        }
        Ok(changes) => format!(
            "update_group by {}: {}",
            asking.folder,
            changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(why) => format!("update_group by {} refused: {why}", asking.folder),
    };
    crate::admin_audit::record(
        store,
        &folder,
        format!("/groups/{folder}/settings"),
        outcome.is_ok(),
        reason,
    )
    .await;
    let changes = outcome?;
    tracing::info!(group = %folder, by = %asking.folder, changes = changes.len(), "group settings changed on request");
    Ok(serde_json::json!({
        "group": folder,
        "changed": changes
            .iter()
            .map(|c| serde_json::json!({"setting": c.setting, "from": c.from, "to": c.to}))
            .collect::<Vec<_>>(),
        "applies": "from the group's next message",
    }))
}

/// `list_groups`: every group with the chats wired to it.
async fn list_groups(store: &Store) -> Result<serde_json::Value, nanoclaw_store::StoreError> {
    let groups = store.list_groups().await?;
    let mut chats_by_group: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for chat in store.list_chats().await? {
        for (wiring, group) in store.wirings_for_chat(chat.id).await? {
            chats_by_group
                .entry(group.id)
                .or_default()
                .push(serde_json::json!({
                    "channel": chat.channel,
                    "chat_id": chat.platform_id,
                    "name": chat.name,
                    "requires_trigger": wiring.requires_trigger(),
                    "trigger_rule": wiring.trigger_rule.as_str(),
                }));
        }
    }
    Ok(serde_json::Value::Array(
        groups
            .into_iter()
            .map(|g| {
                serde_json::json!({
                    "folder": g.folder,
                    "name": g.name,
                    "trigger": g.trigger,
                    "is_main": g.is_main,
                    "provider": g.provider,
                    "model": g.model,
                    "chats": chats_by_group.remove(&g.id).unwrap_or_default(),
                })
            })
            .collect(),
    ))
}

/// `register_chat`: wires a chat to a (new or existing) group other than the main one.
async fn register_chat(
    inner: &Arc<Inner>,
    channel: String,
    chat_id: String,
    folder: String,
    name: Option<String>,
    requires_trigger: bool,
) -> Result<serde_json::Value, String> {
    let valid_channel = !channel.is_empty()
        && channel.len() <= 32
        && channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_channel {
        return Err(format!(
            "channel {channel:?} is not a channel type (lowercase letters, digits, - and _)"
        ));
    }
    if chat_id.trim().is_empty() || chat_id.len() > 256 {
        return Err("chat_id must be 1 to 256 characters".into());
    }
    let existing = inner
        .store
        .group_by_folder(folder.as_str())
        .await
        .map_err(|e| e.to_string())?;
    // A chat wired to the main group would let its members act as the owner (approvals,
    // admin requests): only the owner wires chats to main, from the CLI.
    if existing.as_ref().is_some_and(|g| g.is_main) {
        return Err(format!(
            "{folder:?} is the owner's main group; chats are wired to it by the owner, not by an agent"
        ));
    }
    let existed = existing.is_some();
    let group = inner
        .store
        .ensure_group(NewGroup {
            name: name.unwrap_or_else(|| folder.clone()),
            folder,
            trigger: Some(inner.config.trigger.clone()),
            is_main: false,
            provider: None,
            model: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let chat = inner
        .store
        .ensure_chat(channel.as_str(), chat_id.as_str(), chat_id.as_str(), true)
        .await
        .map_err(|e| e.to_string())?;
    inner
        .store
        .wire(
            chat.id,
            group.id.clone(),
            nanoclaw_store::WiringOptions::new(requires_trigger, SessionMode::Shared),
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%channel, %chat_id, group = %group.folder, "chat registered by the main group");
    Ok(serde_json::json!({
        "group": group.folder,
        "created_group": !existed,
        "channel": channel,
        "chat_id": chat_id,
        "requires_trigger": requires_trigger,
    }))
}

/// An agent's task request, checked: a group manages only its own tasks; the main group manages
/// every group's and may create tasks for another group (answering in that group's chat).
/// Re-exported as `crate::tasks::handle_request`.
pub async fn task_request(
    store: &Store,
    tasks: &Scheduler,
    group: &Group,
    chat: &Chat,
    action: RequestAction,
) -> Result<serde_json::Value, String> {
    use RequestAction as A;
    let result = match action {
        A::ScheduleTask {
            prompt,
            schedule,
            script,
            isolated,
            group: target,
        } => {
            let (target, chat_id) = task_target(store, group, chat, target).await?;
            // The task's own checks first, then the group's room for it, as always.
            Scheduler::check_new_task(&prompt, script.as_deref()).map_err(|e| e.to_string())?;
            check_room_for_task(store, tasks, &target)
                .await
                .map_err(|e| e.to_string())?;
            tasks
                .create(
                    &target,
                    chat_id,
                    prompt,
                    &schedule,
                    script,
                    isolated,
                    format!("agent:{}", group.folder),
                )
                .await
        }
        A::ListTasks => {
            let scope = (!group.is_main).then(|| group.id.clone());
            let all = store.list_tasks(scope).await.map_err(|e| e.to_string())?;
            let views = tasks.views(&all).await.map_err(|e| e.to_string())?;
            return serde_json::to_value(views).map_err(|e| e.to_string());
        }
        A::UpdateTask {
            task_id,
            prompt,
            schedule,
            script,
        } => {
            let task = owned_task(store, group, &task_id).await?;
            tasks
                .update(&task, prompt, schedule.as_deref(), script)
                .await
        }
        A::PauseTask { task_id } => {
            let task = owned_task(store, group, &task_id).await?;
            tasks.pause(&task).await
        }
        A::ResumeTask { task_id } => {
            let task = owned_task(store, group, &task_id).await?;
            tasks.resume(&task).await
        }
        A::CancelTask { task_id } => {
            let task = owned_task(store, group, &task_id).await?;
            tasks.cancel(&task).await
        }
        other => return Err(format!("not a task request: {other:?}")),
    };
    match result {
        Ok(task) => serde_json::to_value(tasks.view(&task).await).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The group a new task is for and the chat it answers in: the asking group's own, or (for the
/// main group only) another group's and that group's first chat.
async fn task_target(
    store: &Store,
    group: &Group,
    chat: &Chat,
    target: Option<String>,
) -> Result<(Group, i64), String> {
    let Some(folder) = target.filter(|f| f != &group.folder) else {
        return Ok((group.clone(), chat.id));
    };
    if !group.is_main {
        return Err(format!(
            "only the owner's main group may schedule tasks for another group; \
             this is group {:?}",
            group.folder
        ));
    }
    let target = store
        .group_by_folder(folder.as_str())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no group with folder {folder:?}; see list_groups"))?;
    let chat_id = store
        .chats_for_group(target.id.clone())
        .await
        .map_err(|e| e.to_string())?
        .first()
        .map(|c| c.id)
        .ok_or_else(|| format!("group {folder:?} has no chat for the task's answers"))?;
    Ok((target, chat_id))
}

/// A group has room for `scheduler.max_tasks_per_group` live (not done, not cancelled) tasks.
async fn check_room_for_task(
    store: &Store,
    tasks: &Scheduler,
    group: &Group,
) -> Result<(), TaskError> {
    let existing = store
        .list_tasks(Some(group.id.clone()))
        .await?
        .into_iter()
        .filter(|t| {
            !matches!(
                t.status,
                nanoclaw_store::TaskStatus::Done | nanoclaw_store::TaskStatus::Cancelled
            )
        })
        .count();
    let limit = tasks.max_tasks_per_group();
    if existing >= limit {
        return Err(TaskError::Invalid(format!(
            "group {:?} already has {existing} scheduled tasks (the limit is {limit}); cancel some first",
            group.folder
        )));
    }
    Ok(())
}

/// The task, if `group` may manage it. Another group's task reads as missing, so a group cannot
/// probe which ids exist.
async fn owned_task(store: &Store, group: &Group, task_id: &str) -> Result<Task, String> {
    match store.task(task_id.to_owned()).await {
        Ok(Some(task)) if group.is_main || task.group_id == group.id => Ok(task),
        Ok(_) => Err(TaskError::NotFound(task_id.to_owned()).to_string()),
        Err(e) => Err(e.to_string()),
    }
}
