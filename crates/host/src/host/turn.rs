//! One turn: a batch of a session's messages answered by its agent. Prepared (the session,
//! group, chat and task run read; exhausted messages given up), driven (the agent's events
//! until it finishes, fails or times out) and finished (the reply saved with the messages'
//! completion, or the failure recorded).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_protocol::{
    AgentMessage, ChatMessage, ChatRef, HostMessage, Request, RequestResult, ToolActivity,
    ToolPhase, Turn, TurnFinished,
};
use nanoclaw_store::{
    Chat, Group, Inbound, NewOutbound, OutboundKind, RunStatus, Session, Task, TaskRunRow,
    Usage as StoreUsage,
};

use super::Inner;
use super::failure::{defer_turn, fail_turn, give_up_exhausted};
use super::owner::tell_owner;
use super::requests::{handle_request, task_for_run};
use crate::agents::{AgentEvent, LiveAgent};
use crate::channel::{Channel, Progress};
use crate::log_limit::clean;
use crate::now_ms;

/// Longest reply the host accepts from the agent (joined from `reply_part` frames); a longer
/// one fails the turn with a message saying so instead of being stored.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Longest wait between two attempts to save a finished turn.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(30);

/// How a turn ended.
pub(super) enum TurnEnd {
    Finished(Box<TurnFinished>),
    Failed {
        error: String,
        retryable: bool,
    },
    /// The owner stopped it (`/stop`, `/pause`; see `kill_switch.rs`).
    Stopped {
        reason: String,
    },
}

/// The messages a turn answers: the first one's row id (it keys the turn's outbound rows)
/// and every one's platform id.
#[derive(Clone, Copy)]
pub(super) struct TurnMessages<'a> {
    pub(super) first_id: i64,
    pub(super) answers: &'a [String],
}

/// What a turn is about, read before it starts.
pub(super) struct TurnContext {
    pub(super) session: Session,
    pub(super) group: Group,
    pub(super) chat: Chat,
    /// The batch's inbound row ids.
    pub(super) ids: Vec<i64>,
    /// Every message of the turn gets its answer, not only the last one.
    pub(super) answers: Vec<String>,
    /// The scheduled task's run the turn carries out, if it is one.
    pub(super) task_run: Option<(Task, TaskRunRow)>,
    /// The most attempts any of the batch's messages has had.
    pub(super) tries: u32,
}

impl TurnContext {
    pub(super) fn session_id(&self) -> &str {
        &self.session.id
    }

    pub(super) fn first_id(&self) -> i64 {
        self.ids.first().copied().unwrap_or_default()
    }

    pub(super) fn task_id(&self) -> Option<&str> {
        self.task_run.as_ref().map(|(task, _)| task.id.as_str())
    }

    fn messages(&self) -> TurnMessages<'_> {
        TurnMessages {
            first_id: self.first_id(),
            answers: &self.answers,
        }
    }
}

/// Answers one batch of the session's messages. `session_span`: the worker's span, which learns
/// the session's group here.
pub(super) async fn run_turn(
    inner: &Arc<Inner>,
    session_id: &str,
    batch: Vec<Inbound>,
    session_span: &tracing::Span,
) -> anyhow::Result<()> {
    let ctx = prepare_turn(inner, session_id, &batch).await?;
    session_span.record("group", ctx.group.folder.as_str());
    tracing::info!(messages = ctx.ids.len(), tries = ctx.tries, "turn starting");
    if give_up_exhausted(inner, &ctx, &batch).await? {
        return Ok(());
    }
    let mut guard = super::kill_switch::register(
        inner,
        session_id,
        (ctx.chat.channel.clone(), ctx.chat.platform_id.clone()),
        ctx.group.folder.clone(),
    );
    if super::kill_switch::is_paused(inner) {
        // Claimed just as the owner paused: back to the queue untouched, answered after /resume.
        let now = now_ms();
        inner
            .store
            .defer_claimed(ctx.ids.clone(), now, "paused by the owner", now)
            .await?;
        return Ok(());
    }
    let mut agent = match inner.pool.acquire(&ctx.session, &ctx.group).await {
        Ok(agent) => agent,
        Err(e) if e.is_runtime_down() => {
            return defer_turn(inner, &ctx, e.to_string()).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start the agent");
            let retryable = e.is_retryable();
            return fail_turn(inner, &ctx, e.to_string(), retryable).await;
        }
    };
    // Stopped while its sandbox was starting: it never begins.
    if let Some(reason) = guard.reason() {
        return finish_turn(inner, &ctx, agent, TurnEnd::Stopped { reason }).await;
    }
    let turn_id = format!("{session_id}:{}:{}", ctx.first_id(), ctx.tries);
    let turn = turn_message(inner, &ctx, &batch, &turn_id);
    if let Err(e) = agent.send(&turn).await {
        agent.kill().await;
        return fail_turn(inner, &ctx, format!("the agent stopped: {e}"), true).await;
    }
    let end = drive_turn(inner, &ctx, &mut agent, &turn_id, &mut guard.stopped).await;
    finish_turn(inner, &ctx, agent, end).await
}

/// Reads what the turn is about: its session, group, chat and (for a scheduled task's run)
/// the task.
async fn prepare_turn(
    inner: &Arc<Inner>,
    session_id: &str,
    batch: &[Inbound],
) -> anyhow::Result<TurnContext> {
    let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
    let answers: Vec<String> = batch.iter().map(|m| m.platform_msg_id.clone()).collect();
    let session = inner
        .store
        .session(session_id.to_owned())
        .await?
        .context("session vanished")?;
    let group = inner
        .store
        .group(session.group_id.clone())
        .await?
        .context("agent group vanished")?;
    // The batch's chat, not the session's: a group-wide (agent-shared) session spans chats,
    // and each of its turns answers one of them (see claim_pending).
    let chat_id = batch.first().map_or(session.chat_id, |m| m.chat_id);
    let chat = inner.store.chat(chat_id).await?.context("chat vanished")?;
    // A scheduled task's run travels alone in its batch (see claim_pending).
    let task_run = match batch.first().and_then(|m| m.task_run_id) {
        Some(run_id) => task_for_run(inner, run_id).await,
        None => None,
    };
    let tries = batch.iter().map(|m| m.tries).max().unwrap_or(1);
    Ok(TurnContext {
        session,
        group,
        chat,
        ids,
        answers,
        task_run,
        tries,
    })
}

/// The `turn` message for the agent: the batch's messages, the local time and the task run.
fn turn_message(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    batch: &[Inbound],
    turn_id: &str,
) -> HostMessage {
    let zone = inner.tasks.zone_for(&ctx.group);
    HostMessage::Turn(Turn {
        turn_id: turn_id.to_owned(),
        messages: batch
            .iter()
            .map(|m| ChatMessage {
                id: m.id.to_string(),
                sender: m.sender.clone(),
                sender_name: m.sender_name.clone(),
                time: chrono::DateTime::from_timestamp_millis(m.received_at)
                    .unwrap_or_default()
                    .to_rfc3339(),
                chat: ChatRef {
                    channel: ctx.chat.channel.clone(),
                    chat_id: ctx.chat.platform_id.clone(),
                    thread: m.thread.clone(),
                },
                text: m.text.clone(),
            })
            .collect(),
        local_time: Some(inner.tasks.local_now(zone)),
        task: ctx
            .task_run
            .as_ref()
            .map(|(task, run)| inner.tasks.task_run_for_turn(task, run)),
    })
}

/// Follows the agent's events until the turn ends (finished, failed, timed out, agent gone).
async fn drive_turn(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    agent: &mut LiveAgent,
    turn_id: &str,
    stopped: &mut tokio::sync::watch::Receiver<Option<String>>,
) -> TurnEnd {
    let mut driver = TurnDriver {
        inner,
        ctx,
        turn_id,
        channel: inner.channels.get(&ctx.chat.channel).cloned(),
        sent_messages: 0,
        reply_parts: String::new(),
    };
    // Platforms show "typing…" while the agent works; where it fades by itself it is sent
    // again a second before it would, for as long as the turn runs.
    driver.progress(Progress::Working).await;
    let renew_every = driver
        .channel
        .as_ref()
        .and_then(|channel| channel.typing_lasts())
        .map(|lasts| {
            lasts
                .saturating_sub(Duration::from_secs(1))
                .max(Duration::from_secs(1))
        });
    let mut typing = renew_every
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let deadline = tokio::time::Instant::now() + inner.config.agents.turn_timeout();
    loop {
        let next = tokio::time::timeout_at(deadline, agent.next_event());
        let event = tokio::select! {
            event = next => event,
            // The owner's kill switch: the turn ends here, whatever the agent is doing.
            Ok(()) = stopped.changed() => {
                if let Some(reason) = stopped.borrow().clone() {
                    return TurnEnd::Stopped { reason };
                }
                continue;
            }
            // `next_event` is a channel receive: dropping it here loses nothing.
            _ = async {
                match typing.as_mut() {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {
                driver.progress(Progress::Working).await;
                continue;
            }
        };
        let event = match event {
            Ok(event) => event,
            Err(_) => {
                return TurnEnd::Failed {
                    error: format!(
                        "the turn took longer than {}s and was stopped",
                        inner.config.agents.turn_timeout_secs
                    ),
                    retryable: true,
                };
            }
        };
        let msg = match event {
            AgentEvent::Message(msg) => msg,
            AgentEvent::Exited(why) => {
                return TurnEnd::Failed {
                    error: format!("the agent exited mid-turn ({why})"),
                    retryable: true,
                };
            }
        };
        if let Some(end) = driver.on_message(agent, msg).await {
            return end;
        }
    }
}

/// A running turn's state while its agent works.
struct TurnDriver<'a> {
    inner: &'a Arc<Inner>,
    ctx: &'a TurnContext,
    turn_id: &'a str,
    /// The chat's channel, for progress (none when the channel is not running).
    channel: Option<Arc<dyn Channel>>,
    /// Messages the agent sent with `send_message` so far; numbers their keys.
    sent_messages: u32,
    /// A long reply's parts received so far (protocol 1.3).
    reply_parts: String,
}

impl TurnDriver<'_> {
    /// Handles one message from the agent; `Some` once the turn has ended.
    async fn on_message(&mut self, agent: &mut LiveAgent, msg: AgentMessage) -> Option<TurnEnd> {
        match msg {
            AgentMessage::TextDelta { turn_id: t, text } if t == self.turn_id => {
                self.progress(Progress::TextDelta(text)).await;
                None
            }
            AgentMessage::ToolActivity(activity) if activity.turn_id == self.turn_id => {
                self.on_tool(agent, activity).await;
                None
            }
            AgentMessage::Request(request) => self.on_request(agent, request).await,
            AgentMessage::ReplyPart { turn_id: t, text } if t == self.turn_id => {
                self.on_reply_part(&text)
            }
            AgentMessage::TurnFinished(done) if done.turn_id == self.turn_id => {
                Some(self.on_finished(done))
            }
            AgentMessage::TurnFailed {
                turn_id: t,
                error,
                retryable,
            } if t == self.turn_id => {
                // The agent already retried its model calls with backoff; trying the whole
                // turn again would only keep the user waiting longer for the same error.
                tracing::debug!(retryable, "agent reported a failed turn");
                Some(TurnEnd::Failed {
                    error,
                    retryable: false,
                })
            }
            AgentMessage::Log { level, message } => {
                log_agent_line(agent, level, &message);
                None
            }
            AgentMessage::Fatal { error } => Some(TurnEnd::Failed {
                error: format!("the agent gave up: {error}"),
                retryable: false,
            }),
            other => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let other = clean(&format!("{other:?}"));
                    if agent.log.admit(other.len()) {
                        tracing::debug!(%other, "ignoring an agent message for another turn");
                    }
                }
                None
            }
        }
    }

    async fn progress(&self, progress: Progress) {
        if let Some(ch) = &self.channel {
            ch.progress(&self.ctx.chat.platform_id, &self.ctx.answers, progress)
                .await;
        }
    }

    async fn on_tool(&self, agent: &mut LiveAgent, activity: ToolActivity) {
        if agent
            .log
            .admit(activity.tool.len() + activity.summary.len())
        {
            tracing::info!(tool = %clean(&activity.tool), phase = ?activity.phase, summary = %clean(&activity.summary), "tool");
        }
        if activity.phase == ToolPhase::Started {
            self.progress(Progress::Tool {
                tool: activity.tool,
                summary: activity.summary,
            })
            .await;
        }
    }

    /// Answers the agent's request; `Some` when the answer could not be sent.
    async fn on_request(&mut self, agent: &mut LiveAgent, request: Request) -> Option<TurnEnd> {
        let result = handle_request(
            self.inner,
            self.ctx.session_id(),
            &self.ctx.group,
            &self.ctx.chat,
            self.ctx.messages(),
            &mut self.sent_messages,
            request.action,
        )
        .await;
        if let Err(why) = &result
            && agent.log.admit(why.len())
        {
            tracing::info!(why = %clean(why), "agent request refused");
        }
        let reply = HostMessage::RequestResult(match result {
            Ok(data) => RequestResult {
                request_id: request.request_id,
                ok: true,
                error: None,
                data,
            },
            Err(error) => RequestResult {
                request_id: request.request_id,
                ok: false,
                error: Some(error),
                data: serde_json::Value::Null,
            },
        });
        match agent.send(&reply).await {
            Ok(()) => None,
            Err(e) => Some(TurnEnd::Failed {
                error: format!("the agent stopped: {e}"),
                retryable: true,
            }),
        }
    }

    /// A reply too long for one protocol line comes in parts (protocol 1.3).
    fn on_reply_part(&mut self, text: &str) -> Option<TurnEnd> {
        if self.reply_parts.len() + text.len() > MAX_REPLY_BYTES {
            return Some(reply_too_long());
        }
        self.reply_parts.push_str(text);
        None
    }

    fn on_finished(&mut self, mut done: TurnFinished) -> TurnEnd {
        if !self.reply_parts.is_empty() {
            if self.reply_parts.len() + done.reply.len() > MAX_REPLY_BYTES {
                return reply_too_long();
            }
            self.reply_parts.push_str(&done.reply);
            done.reply = std::mem::take(&mut self.reply_parts);
        }
        TurnEnd::Finished(Box::new(done))
    }
}

fn reply_too_long() -> TurnEnd {
    TurnEnd::Failed {
        error: format!(
            "the reply is longer than {} MiB, too long to deliver; ask for a shorter answer or for the result in a file",
            MAX_REPLY_BYTES / (1024 * 1024)
        ),
        retryable: false,
    }
}

/// The agent's own log line, within its sandbox's log budget.
fn log_agent_line(agent: &LiveAgent, level: nanoclaw_protocol::LogLevel, message: &str) {
    if !agent.log.admit(message.len()) {
        return;
    }
    let message = clean(message);
    match level {
        nanoclaw_protocol::LogLevel::Error | nanoclaw_protocol::LogLevel::Warn => {
            tracing::warn!("agent: {message}")
        }
        _ => tracing::debug!("agent: {message}"),
    }
}

/// Records how the turn ended: the reply saved, or the failure.
async fn finish_turn(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    agent: LiveAgent,
    end: TurnEnd,
) -> anyhow::Result<()> {
    match end {
        TurnEnd::Finished(done) => {
            // The agent's work is done; saving the reply must not hold its slot.
            inner.pool.release(agent).await;
            save_answer(inner, ctx, *done).await;
            Ok(())
        }
        TurnEnd::Failed { error, retryable } => {
            // The error may carry the sandbox's text: escaped and cut in the log record.
            tracing::warn!(error = %clean(&error), retryable, "turn failed");
            // The agent's state is suspect after a failure; start fresh next time.
            agent.kill().await;
            fail_turn(inner, ctx, error, retryable).await
        }
        TurnEnd::Stopped { reason } => {
            // Killed first, so no further tool runs; then its messages are done for good.
            agent.kill().await;
            tracing::warn!(%reason, "turn stopped by the owner");
            inner
                .store
                .stop_turn(ctx.ids.clone(), reason, now_ms())
                .await?;
            Ok(())
        }
    }
}

/// Stores a finished turn's reply, its task run's outcome and its token usage.
async fn save_answer(inner: &Arc<Inner>, ctx: &TurnContext, done: TurnFinished) {
    let session_id = ctx.session_id();
    let mut replies = Vec::new();
    if !done.reply.trim().is_empty() {
        replies.push(NewOutbound {
            session_id: Some(session_id.to_owned()),
            chat_id: ctx.chat.id,
            in_reply_to: ctx.ids.last().copied(),
            idempotency_key: format!("reply:{session_id}:{}", ctx.first_id()),
            text: done.reply,
            kind: OutboundKind::Reply,
            files: Vec::new(),
        });
    }
    let task_status = ctx.task_run.is_some().then(|| {
        if done.precheck.as_ref().is_none_or(|p| p.woke) {
            RunStatus::Ok
        } else {
            RunStatus::Skipped
        }
    });
    let tokens = (done.usage.input_tokens, done.usage.output_tokens);
    save_turn(inner, ctx, replies, task_status, tokens).await;
    if let Err(e) = inner
        .store
        .record_usage(
            session_id.to_owned(),
            StoreUsage {
                input_tokens: done.usage.input_tokens,
                output_tokens: done.usage.output_tokens,
                cache_read: done.usage.cache_read_input_tokens,
                cache_creation: done.usage.cache_creation_input_tokens,
            },
            now_ms(),
        )
        .await
    {
        // Only the token counts are lost; the reply is stored.
        tracing::warn!(error = %e, "recording token usage failed");
    }
    inner.delivery_wake.notify_one();
    tracing::info!("turn finished");
}

/// Stores a finished turn: its replies and the completion of its messages (and of its task run),
/// in one transaction. A storage error (disk full, damaged table) is not the message's fault and
/// says nothing about the reply: the reply stays in memory and the save is retried with backoff
/// until it works, and the owner is told once. Should the host stop meanwhile, the messages are
/// still `processing` and are answered again after the restart (replies carry idempotency keys).
async fn save_turn(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    replies: Vec<NewOutbound>,
    task_status: Option<RunStatus>,
    tokens: (u64, u64),
) {
    let ids = &ctx.ids;
    let mut delay = Duration::from_secs(1);
    let mut told = false;
    loop {
        let saved = match task_status {
            Some(status) => {
                inner
                    .store
                    .complete_task_turn(ids.to_vec(), replies.clone(), status, tokens, now_ms())
                    .await
            }
            None => inner
                .store
                .complete_turn(ids.to_vec(), replies.clone(), now_ms())
                .await
                .map(|stored| {
                    for row in stored {
                        remember_answers(inner, row.id, &ctx.answers);
                    }
                }),
        };
        let Err(e) = saved else {
            if told {
                tracing::info!("the reply was saved after all");
            }
            return;
        };
        tracing::error!(error = %e, retry_in = ?delay, "saving a finished turn failed; the reply is kept and the save retried");
        if !told {
            told = true;
            tell_owner(
                inner,
                format!("storage:{}:{}", ctx.session_id(), ctx.first_id()),
                format!(
                    "I answered a message but could not save the reply: {e}. The reply is kept \
                     and saving is retried until it works; check free disk space and the \
                     database (`nanoclaw doctor`)."
                ),
            )
            .await;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(SAVE_RETRY_MAX);
    }
}

/// Records which messages an outbound row answers (see `Inner::answers`).
pub(super) fn remember_answers(inner: &Inner, outbound_id: i64, answers: &[String]) {
    if answers.len() < 2 {
        // `in_reply_to` says it already.
        return;
    }
    if let Ok(mut map) = inner.answers.lock() {
        map.insert(outbound_id, answers.to_vec());
    }
}

/// The platform ids of inbound rows.
pub(super) async fn platform_ids(inner: &Inner, ids: &[i64]) -> Vec<String> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Ok(Some(m)) = inner.store.inbound(id).await {
            out.push(m.platform_msg_id);
        }
    }
    out
}
