//! The host's side of the web dashboard (`nanoclaw-dashboard`): what the page shows, read
//! from the store and the running host, and the few things it may change (an approval, the
//! web chat's wiring). The dashboard crate serves; this only answers.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use nanoclaw_dashboard::{Backend, BackendError, TaskChange};
use nanoclaw_store::{Group, Store};
use serde_json::{Value, json};

use super::Inner;

/// Task runs shown per task.
const RUNS_SHOWN: usize = 50;

/// Answers the dashboard from a running host. Holds the host weakly: the dashboard is one of
/// the host's channels, and a strong handle would keep the host (and its data directory's
/// lock) alive forever.
pub(crate) struct HostBackend {
    inner: Weak<Inner>,
}

impl HostBackend {
    pub(crate) fn new(inner: &Arc<Inner>) -> Arc<HostBackend> {
        Arc::new(HostBackend {
            inner: Arc::downgrade(inner),
        })
    }

    fn host(&self) -> Result<Arc<Inner>, BackendError> {
        self.inner
            .upgrade()
            .ok_or_else(|| BackendError::Failed("the host is stopping".into()))
    }
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(e.to_string())
}

fn to_json(value: impl serde::Serialize) -> Result<Value, BackendError> {
    serde_json::to_value(value).map_err(failed)
}

async fn group(store: &Store, folder: &str) -> Result<Group, BackendError> {
    store
        .group_by_folder(folder)
        .await
        .map_err(failed)?
        .ok_or_else(|| BackendError::NotFound(format!("there is no group {folder:?}")))
}

/// The web chat with group `folder`: its id on the `web` channel is the folder.
fn web_chat_id(folder: &str) -> String {
    folder.to_owned()
}

#[async_trait]
impl Backend for HostBackend {
    async fn overview(&self) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let store = &inner.store;
        let host = inner.host_state().await;
        let queue = store.queue_counts().await.map_err(failed)?;
        let failures = store
            .failures_since(crate::now_ms() - 24 * 3600 * 1000)
            .await
            .map_err(failed)?;
        let channels: Vec<Value> = inner
            .channel_health()
            .into_iter()
            .map(|(name, health)| json!({ "name": name, "health": health }))
            .collect();
        Ok(json!({
            "host": host,
            "channels": channels,
            "queue": {
                "waiting": queue.pending,
                "in_turn": queue.processing,
                "replies": queue.outbound,
            },
            "paused": store.paused().await.map_err(failed)?,
            "failures": {
                "messages": failures.messages,
                "task_runs": failures.task_runs,
                "deliveries": failures.deliveries,
                "total": failures.total(),
            },
            "approvals_waiting": store.pending_approval_count().await.map_err(failed)?,
            "held_for_you": store.waiting_messages().await.map_err(failed)?.len(),
        }))
    }

    async fn groups(&self) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let store = &inner.store;
        let mut out = Vec::new();
        for group in store.list_groups().await.map_err(failed)? {
            let mut chats = Vec::new();
            for chat in store.chats_for_group(&group.id).await.map_err(failed)? {
                let wiring = store
                    .wirings_for_chat(chat.id)
                    .await
                    .map_err(failed)?
                    .into_iter()
                    .find(|(_, g)| g.id == group.id)
                    .map(|(w, _)| w);
                chats.push(json!({ "chat": chat, "wiring": wiring }));
            }
            out.push(json!({ "group": group, "chats": chats }));
        }
        Ok(Value::Array(out))
    }

    async fn tasks(&self) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let tasks = inner.store.list_tasks(None).await.map_err(failed)?;
        to_json(inner.tasks.views(&tasks).await.map_err(failed)?)
    }

    async fn task_runs(&self, task_id: &str) -> Result<Value, BackendError> {
        let inner = self.host()?;
        if inner.store.task(task_id).await.map_err(failed)?.is_none() {
            return Err(BackendError::NotFound(format!(
                "there is no task {task_id:?}"
            )));
        }
        to_json(
            inner
                .store
                .task_runs(task_id, RUNS_SHOWN)
                .await
                .map_err(failed)?,
        )
    }

    async fn change_task(&self, task_id: &str, change: TaskChange) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let task = inner
            .store
            .task(task_id)
            .await
            .map_err(failed)?
            .ok_or_else(|| BackendError::NotFound(format!("there is no task {task_id:?}")))?;
        let refused = |e: crate::tasks::TaskError| match e {
            crate::tasks::TaskError::Store(e) => failed(e),
            other => BackendError::Invalid(other.to_string()),
        };
        let task = match change {
            TaskChange::RunNow => {
                inner.tasks.run_now(&task).await.map_err(refused)?;
                task
            }
            TaskChange::Pause => inner.tasks.pause(&task).await.map_err(refused)?,
            TaskChange::Resume => inner.tasks.resume(&task).await.map_err(refused)?,
            TaskChange::Cancel => inner.tasks.cancel(&task).await.map_err(refused)?,
        };
        tracing::info!(task = %task_id, ?change, "task changed in the dashboard");
        inner.look_again();
        to_json(inner.tasks.view(&task).await)
    }

    async fn vault(&self) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let secrets = match &inner.vault {
            Some(vault) => vault.list().await.map_err(failed)?,
            None => Vec::new(),
        };
        let approvals = inner.store.vault_approvals().await.map_err(failed)?;
        Ok(json!({ "secrets": secrets, "approvals": approvals }))
    }

    async fn decide_approval(&self, grant: i64, approve: bool) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let decided = inner
            .store
            .vault_decide_approval(grant, approve, crate::now_ms())
            .await
            .map_err(failed)?
            .ok_or_else(|| BackendError::NotFound(format!("there is no grant #{grant}")))?;
        let verb = if approve { "approved" } else { "denied" };
        tracing::info!(
            grant,
            state = decided.state.as_str(),
            "grant approval decided in the dashboard"
        );
        crate::admin_audit::record(
            &inner.store,
            &decided.group_folder,
            format!("/groups/{}/grants/{grant}", decided.group_folder),
            true,
            format!(
                "grant #{grant} ({} on {}) {verb} by the owner in the dashboard",
                decided.secret_name, decided.host
            ),
        )
        .await;
        to_json(decided)
    }

    async fn audit(&self, before: Option<i64>, limit: usize) -> Result<Value, BackendError> {
        let inner = self.host()?;
        to_json(
            inner
                .store
                .audit_rows_newest(before, limit)
                .await
                .map_err(failed)?,
        )
    }

    async fn verify_audit(&self) -> Result<Value, BackendError> {
        let inner = self.host()?;
        match nanoclaw_vault::Audit::new(inner.store.clone())
            .verify()
            .await
        {
            Ok(rows) => Ok(json!({ "intact": true, "rows": rows })),
            Err(nanoclaw_vault::VerifyError::ChainBroken { id, why }) => {
                tracing::error!(row = id, %why, "the audit chain is broken (seen from the dashboard)");
                Ok(json!({ "intact": false, "broken_at": id, "why": why }))
            }
            Err(e) => Err(failed(e)),
        }
    }

    async fn skills(&self, folder: &str) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let group = group(&inner.store, folder).await?;
        to_json(inner.store.group_skills(&group.id).await.map_err(failed)?)
    }

    async fn skill_graph_svg(&self, folder: &str) -> Result<String, BackendError> {
        let inner = self.host()?;
        let group = group(&inner.store, folder).await?;
        crate::skills::chat::graph_text(
            &inner.store,
            &inner.paths,
            &group.id,
            &group.folder,
            nanoclaw_skills::Format::Svg,
        )
        .await
        .map_err(BackendError::Failed)
    }

    async fn open_chat(&self, folder: &str) -> Result<String, BackendError> {
        let inner = self.host()?;
        let group = group(&inner.store, folder).await?;
        let chat_id = web_chat_id(&group.folder);
        crate::channel::platforms::sync_configured_chats(
            &inner.store,
            nanoclaw_dashboard::NAME,
            vec![nanoclaw_channel::ConfiguredChat {
                chat_id: chat_id.clone(),
                name: format!("dashboard: {}", group.name),
                group: group.folder.clone(),
                replies_to_owner: false,
            }],
        )
        .await
        .map_err(failed)?;
        Ok(chat_id)
    }

    async fn transcript(&self, folder: &str, limit: usize) -> Result<Value, BackendError> {
        let inner = self.host()?;
        let group = group(&inner.store, folder).await?;
        let chat = inner
            .store
            .chat_by_platform(nanoclaw_dashboard::NAME, web_chat_id(&group.folder))
            .await
            .map_err(failed)?;
        let lines = match chat {
            Some(chat) => inner
                .store
                .chat_transcript(chat.id, limit)
                .await
                .map_err(failed)?,
            None => Vec::new(),
        };
        to_json(lines)
    }
}
