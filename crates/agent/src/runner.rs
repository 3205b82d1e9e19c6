//! The session: handshake, the stdin dispatcher, and the tool loop for each turn.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, Local};
use nanoclaw_protocol::contract;
use nanoclaw_protocol::{
    AgentMessage, Hello, HostMessage, LineReader, LogLevel, PROTOCOL_MAJOR, PROTOCOL_MINOR,
    PrecheckOutcome, Ready, ToolActivity, ToolPhase, Turn, TurnFinished, is_compatible,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use crate::bridge::{Bridge, Upstream};
use crate::compaction;
use crate::conversation::{Conversation, ConversationStore};
use crate::format::{context_line, format_precheck_data, format_task, format_turn};
use crate::host_link::{HostLink, Outbox};
use crate::mcp::{McpLimits, McpServers};
use crate::memory::{self, PromptContext};
use crate::precheck;
use crate::provider::{
    self, ContentBlock, Message, ModelRequest, Provider, ProviderError, RetryPolicy, Role,
    ToolSpec, Usage,
};
use crate::session_tools::add_session_tools;
use crate::tools::{ToolContext, ToolRegistry};

/// Model calls per turn before the agent stops and says so.
pub const MAX_TOOL_ROUNDS: usize = 40;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_IO: i32 = 1;
pub const EXIT_FATAL: i32 = 2;

/// What the host passes in the environment.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// Where the host's model relay is: `NANOCLAW_MODEL_SOCKET` (its Unix socket, the
    /// default), or `NANOCLAW_MODEL_TCP` (`host:port`) with `NANOCLAW_MODEL_TOKEN` where no
    /// socket can cross into the sandbox.
    pub relay: Upstream,
    /// `NANOCLAW_WORKSPACE` (default: the current directory): the group folder.
    pub workspace: PathBuf,
    /// `NANOCLAW_GLOBAL_DIR`: the read-only global memory folder, if any.
    pub global_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is not set; the host must pass it to the agent")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot determine the workspace: {workspace} is not set and the current directory is unknown ({0})",
        workspace = contract::env::WORKSPACE
    )]
    NoWorkspace(std::io::Error),
}

impl AgentEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Builds the environment from `lookup` (for tests and embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<Self, EnvError> {
        let relay = relay_route(&lookup)?;
        let workspace = match lookup(contract::env::WORKSPACE) {
            Some(w) => w,
            None => std::env::current_dir().map_err(EnvError::NoWorkspace)?,
        };
        Ok(Self {
            relay,
            workspace,
            global_dir: lookup(contract::env::GLOBAL_DIR),
        })
    }
}

/// The relay route from the environment: TCP when `NANOCLAW_MODEL_TCP` is set (then the
/// token is required and a socket must not also be given), else the Unix socket.
fn relay_route(lookup: &impl Fn(&str) -> Option<PathBuf>) -> Result<Upstream, EnvError> {
    let text = |name: &'static str| -> Result<Option<String>, EnvError> {
        lookup(name)
            .map(|v| {
                v.into_os_string()
                    .into_string()
                    .map_err(|_| EnvError::Invalid(format!("{name} is not valid UTF-8")))
            })
            .transpose()
    };
    let Some(addr) = text(contract::env::MODEL_TCP)? else {
        return lookup(contract::env::MODEL_SOCKET)
            .map(Upstream::Unix)
            .ok_or(EnvError::Missing(contract::env::MODEL_SOCKET));
    };
    if lookup(contract::env::MODEL_SOCKET).is_some() {
        return Err(EnvError::Invalid(format!(
            "both {} and {} are set; the host must pass one",
            contract::env::MODEL_SOCKET,
            contract::env::MODEL_TCP
        )));
    }
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        return Err(EnvError::Invalid(format!(
            "{}={addr:?} is not host:port",
            contract::env::MODEL_TCP
        )));
    }
    let token =
        text(contract::env::MODEL_TOKEN)?.ok_or(EnvError::Missing(contract::env::MODEL_TOKEN))?;
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EnvError::Invalid(format!(
            "{} must be non-empty without whitespace",
            contract::env::MODEL_TOKEN
        )));
    }
    Ok(Upstream::Tcp { addr, token })
}

/// Runs one agent session over `input`/`output` (stdin/stdout) and returns the exit code.
/// Every protocol message is written before this returns.
pub async fn run<R, W>(env: AgentEnv, input: R, output: W) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let outbox = Outbox::spawn_writer(output);
    let code = session(env, input, &outbox).await;
    outbox.flush().await;
    code
}

fn fatal(outbox: &Outbox, error: String) -> i32 {
    tracing::error!(%error, "fatal");
    outbox.send(AgentMessage::Fatal { error });
    EXIT_FATAL
}

fn message_kind(msg: &HostMessage) -> String {
    serde_json::to_value(msg)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

async fn session<R>(env: AgentEnv, input: R, outbox: &Outbox) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut reader = LineReader::new(BufReader::new(input));
    let hello = match handshake(&mut reader, outbox).await {
        Ok(hello) => hello,
        Err(code) => return code,
    };
    let (bridge, provider) = match connect_model(&hello, &env, outbox) {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    outbox.send(AgentMessage::Ready(Ready {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        agent_version: AGENT_VERSION.into(),
    }));
    tracing::info!(
        session = %hello.session_id,
        group = %hello.group.folder,
        provider = %hello.model.provider,
        model = %hello.model.model,
        "agent ready"
    );

    let host = HostLink::new(outbox.clone());
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(reader, inbox_tx, host.clone()));

    // After `ready`, so slow servers do not hold up the handshake; turns that arrive
    // meanwhile wait in the inbox.
    let limits = McpLimits::default();
    let mcp = McpServers::start(&hello.mcp_servers, &env.workspace, limits, outbox).await;
    let mut agent = Agent::new(provider, hello, env, host);
    add_session_tools(&mut agent.tools, &agent.hello, &mcp, limits, outbox);
    serve(agent, inbox, outbox).await;
    // `main` exits without running destructors: stop the servers here.
    mcp.shutdown();
    drop(bridge);
    EXIT_OK
}

/// Reads the host's `hello` (skipping malformed lines) and checks its protocol version.
/// `Err` holds the exit code when the session cannot go on.
async fn handshake<R>(reader: &mut LineReader<BufReader<R>>, outbox: &Outbox) -> Result<Hello, i32>
where
    R: AsyncRead + Unpin,
{
    let hello = loop {
        match reader.next::<HostMessage>().await {
            Ok(Some(HostMessage::Hello(h))) => break h,
            Ok(Some(other)) => {
                return Err(fatal(
                    outbox,
                    format!(
                        "expected a hello message first, got `{}`",
                        message_kind(&other)
                    ),
                ));
            }
            Ok(None) => {
                tracing::error!("the host closed stdin before the handshake");
                return Err(EXIT_IO);
            }
            Err(e) if e.is_recoverable() => {
                outbox.log(
                    LogLevel::Warn,
                    format!("skipped a malformed line from the host: {e}"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the handshake failed");
                return Err(EXIT_IO);
            }
        }
    };

    if !is_compatible(hello.protocol_major) {
        return Err(fatal(
            outbox,
            format!(
                "protocol version mismatch: the host speaks {}.{}, this agent (version \
                 {AGENT_VERSION}) speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; use an agent built \
                 with the same nanoclaw version as the host",
                hello.protocol_major, hello.protocol_minor
            ),
        ));
    }
    Ok(hello)
}

/// Opens the loopback bridge to the model relay and the provider `hello` names, which
/// talks through it. `Err` holds the exit code after a fatal message.
fn connect_model(
    hello: &Hello,
    env: &AgentEnv,
    outbox: &Outbox,
) -> Result<(Bridge, Box<dyn Provider>), i32> {
    let bridge = match Bridge::model_relay(env.relay.clone()) {
        Ok(b) => b,
        Err(e) => {
            return Err(fatal(
                outbox,
                format!("cannot open the loopback bridge to the model relay: {e}"),
            ));
        }
    };
    let idle = match hello.model.stream_idle_timeout_secs {
        None => provider::DEFAULT_STREAM_IDLE_TIMEOUT,
        Some(0) => {
            return Err(fatal(
                outbox,
                "model.stream_idle_timeout_secs is 0; it must be at least 1 second".into(),
            ));
        }
        Some(secs) => std::time::Duration::from_secs(secs),
    };
    let Some(provider) = provider::provider_for(
        &hello.model.provider,
        &bridge.base_url(),
        RetryPolicy::default().with_stream_idle_timeout(idle),
    ) else {
        let known: Vec<&str> = provider::provider_names().collect();
        return Err(fatal(
            outbox,
            format!(
                "unknown model provider `{}`; known providers: {}",
                hello.model.provider,
                known.join(", ")
            ),
        ));
    };
    Ok((bridge, provider))
}

/// Answers turns in arrival order until `shutdown` or the end of stdin, then warns about
/// turns that came after the shutdown request.
async fn serve(mut agent: Agent, mut inbox: mpsc::UnboundedReceiver<Inbound>, outbox: &Outbox) {
    // One ordered queue: turns the host sent before `shutdown` are still answered.
    loop {
        match inbox.recv().await {
            Some(Inbound::Turn(turn)) => agent.run_turn(turn).await,
            Some(Inbound::Shutdown) => {
                tracing::info!("shutdown requested; exiting");
                break;
            }
            None => {
                tracing::info!("the host closed stdin; exiting");
                break;
            }
        }
    }
    let mut dropped = 0;
    while let Ok(item) = inbox.try_recv() {
        if matches!(item, Inbound::Turn(_)) {
            dropped += 1;
        }
    }
    if dropped > 0 {
        outbox.log(
            LogLevel::Warn,
            format!("shutting down with {dropped} turn(s) received after the shutdown request"),
        );
    }
}

/// A tool call the model asked for: (id, tool name, input).
type ToolCall = (String, String, Value);

/// What the reader hands to the turn loop, in arrival order.
enum Inbound {
    Turn(Turn),
    Shutdown,
}

async fn read_loop<R>(
    mut reader: LineReader<BufReader<R>>,
    inbox: mpsc::UnboundedSender<Inbound>,
    host: HostLink,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    let outbox = host.outbox().clone();
    loop {
        match reader.next::<HostMessage>().await {
            Ok(Some(HostMessage::Turn(turn))) => {
                if inbox.send(Inbound::Turn(turn)).is_err() {
                    break;
                }
            }
            Ok(Some(HostMessage::RequestResult(result))) => {
                let id = result.request_id.clone();
                if !host.resolve(result) {
                    outbox.log(
                        LogLevel::Warn,
                        format!("ignored a result for request `{id}`, which is not waiting"),
                    );
                }
            }
            Ok(Some(HostMessage::Shutdown)) => {
                // Keep reading: the current turn may still wait for request results.
                let _ = inbox.send(Inbound::Shutdown);
            }
            Ok(Some(HostMessage::Hello(_))) => {
                outbox.log(LogLevel::Warn, "ignored a second hello from the host");
            }
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {
                outbox.log(
                    LogLevel::Warn,
                    format!("skipped a malformed line from the host: {e}"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "reading from the host failed");
                break;
            }
        }
    }
    // Requests still waiting can never be answered now.
    host.close();
}

/// The conversation with the model and everything a turn needs.
pub struct Agent {
    provider: Box<dyn Provider>,
    tools: ToolRegistry,
    hello: Hello,
    env: AgentEnv,
    host: HostLink,
    store: ConversationStore,
    conversation: Conversation,
}

impl Agent {
    /// Loads the saved conversation of `hello.session_id`, if any.
    pub fn new(provider: Box<dyn Provider>, hello: Hello, env: AgentEnv, host: HostLink) -> Self {
        let store = ConversationStore::new(&env.workspace, &hello.session_id);
        let (conversation, note) = store.load();
        if let Some(note) = note {
            host.outbox().log(LogLevel::Warn, note);
        } else if !conversation.messages.is_empty() {
            tracing::info!(
                messages = conversation.messages.len(),
                "resuming the saved conversation"
            );
        }
        Self {
            provider,
            tools: if hello.group.is_main {
                let mut tools = crate::tools::all_tools();
                tools.extend(crate::tools::admin_tools());
                ToolRegistry::new(tools)
            } else {
                ToolRegistry::default()
            },
            hello,
            env,
            host,
            store,
            conversation,
        }
    }

    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    fn out(&self) -> &Outbox {
        self.host.outbox()
    }

    /// Answers one turn: `TurnFinished` or `TurnFailed` (history rolled back) is sent.
    pub async fn run_turn(&mut self, turn: Turn) {
        let turn_id = turn.turn_id.clone();
        tracing::info!(turn = %turn_id, messages = turn.messages.len(), "turn started");

        // A task's pre-check runs before anything else and may end the turn without the model.
        let mut precheck_data = None;
        if let Some(script) = turn.task.as_ref().and_then(|t| t.script.as_deref()) {
            match precheck::run(script, &self.env.workspace).await {
                Ok(verdict) if !verdict.wake => {
                    tracing::info!(turn = %turn_id, "the pre-check did not wake the agent");
                    self.out().send(AgentMessage::TurnFinished(TurnFinished {
                        turn_id,
                        reply: String::new(),
                        usage: Usage::default(),
                        precheck: Some(PrecheckOutcome {
                            woke: false,
                            data: verdict.data,
                        }),
                    }));
                    return;
                }
                Ok(verdict) => precheck_data = Some(verdict.data),
                Err(e) => {
                    tracing::warn!(turn = %turn_id, error = %e, "the pre-check failed");
                    // The same script would most likely fail the same way again.
                    self.out().send(AgentMessage::TurnFailed {
                        turn_id,
                        error: format!("the task's pre-check script failed: {e}"),
                        retryable: false,
                    });
                    return;
                }
            }
        }

        // An isolated task run gets an empty conversation; the ongoing one waits aside,
        // untouched in memory and on disk, and comes back whatever the outcome.
        let isolated = turn.task.as_ref().is_some_and(|t| t.isolated);
        let before = if isolated {
            std::mem::take(&mut self.conversation)
        } else {
            self.conversation.clone()
        };
        let outcome = self.turn_loop(&turn, precheck_data.as_ref()).await;
        if isolated {
            self.conversation = before;
            match outcome {
                Ok((reply, usage)) => self.finished(turn_id, reply, usage, precheck_data),
                Err(e) => self.failed(turn_id, &e),
            }
            return;
        }
        match outcome {
            Ok((reply, usage)) => {
                if let Err(e) = self.store.save(&self.conversation) {
                    self.out().log(LogLevel::Warn, e.to_string());
                }
                self.finished(turn_id, reply, usage, precheck_data);
            }
            Err(e) => {
                // Roll back so a retry of this turn does not see it twice.
                self.conversation = before;
                self.failed(turn_id, &e);
            }
        }
    }

    fn finished(&self, turn_id: String, reply: String, usage: Usage, woke_with: Option<Value>) {
        self.out().send(AgentMessage::TurnFinished(TurnFinished {
            turn_id,
            reply,
            usage,
            precheck: woke_with.map(|data| PrecheckOutcome { woke: true, data }),
        }));
    }

    fn failed(&self, turn_id: String, e: &ProviderError) {
        tracing::warn!(turn = %turn_id, error = %e, "turn failed");
        self.out().send(AgentMessage::TurnFailed {
            turn_id,
            error: format!("the model request failed: {e}"),
            retryable: e.is_retryable(),
        });
    }

    fn system_prompt(&self) -> String {
        memory::system_prompt(&PromptContext {
            hello: &self.hello,
            workspace: &self.env.workspace,
            global_dir: self.env.global_dir.as_deref(),
        })
    }

    /// The current time for the context line: the host's `local_time` (the sandbox may lack
    /// the zone database, so `Local` can be wrong there), else this machine's clock.
    fn now(&self, turn: &Turn) -> DateTime<FixedOffset> {
        if let Some(text) = &turn.local_time {
            match DateTime::parse_from_rfc3339(text) {
                Ok(now) => return now,
                Err(e) => self.out().log(
                    LogLevel::Warn,
                    format!(
                        "the turn's local_time {text:?} is not RFC 3339 ({e}); using the sandbox clock"
                    ),
                ),
            }
        }
        Local::now().fixed_offset()
    }

    async fn turn_loop(
        &mut self,
        turn: &Turn,
        precheck_data: Option<&Value>,
    ) -> Result<(String, Usage), ProviderError> {
        let text = self.turn_text(turn, precheck_data);
        self.conversation.push_user_text(text);
        // Re-read every turn so memory edits apply at once.
        let system = self.system_prompt();
        let specs = self.tools.specs();
        let mut usage = Usage::default();
        let ctx = ToolContext {
            workspace: self.env.workspace.clone(),
            turn_id: turn.turn_id.clone(),
            host: self.host.clone(),
        };

        for _ in 0..MAX_TOOL_ROUNDS {
            self.maybe_compact(&system, &specs, &mut usage).await;
            let request = ModelRequest {
                model: self.hello.model.model.clone(),
                system: system.clone(),
                messages: self.conversation.messages.clone(),
                tools: specs.clone(),
                max_tokens: self.hello.model.max_tokens,
            };
            let out = self.out().clone();
            let turn_id = turn.turn_id.clone();
            let mut on_text = move |text: &str| {
                if !text.is_empty() {
                    out.send(AgentMessage::TextDelta {
                        turn_id: turn_id.clone(),
                        text: text.to_owned(),
                    });
                }
            };
            let response = self.provider.complete(&request, &mut on_text).await?;
            usage.add(&response.usage);
            let u = &response.usage;
            self.conversation.last_input_tokens =
                Some(u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens);

            let (reply, calls) = self.record_reply(response.content);
            if calls.is_empty() {
                return Ok((reply, usage));
            }

            let results = self.run_tools(&turn.turn_id, calls, &ctx).await;
            self.conversation.messages.push(Message {
                role: Role::User,
                content: results,
            });
        }

        let note = format!(
            "I stopped after {MAX_TOOL_ROUNDS} rounds of tool use without finishing. Tell me to \
             continue if I should keep going."
        );
        self.out().send(AgentMessage::TextDelta {
            turn_id: turn.turn_id.clone(),
            text: note.clone(),
        });
        self.conversation
            .messages
            .push(Message::assistant_text(note.clone()));
        Ok((note, usage))
    }

    /// The user message that opens a turn: the context line (time goes with the turn, not
    /// into the system prompt, so the system prompt stays byte-identical between turns and
    /// keeps hitting the prompt cache), the task and precheck data if any, then the messages.
    fn turn_text(&self, turn: &Turn, precheck_data: Option<&Value>) -> String {
        let zone = self.hello.timezone.as_deref().unwrap_or("UTC");
        let mut text = context_line(self.now(turn), zone);
        if let Some(task) = &turn.task {
            text.push('\n');
            text.push_str(&format_task(task));
        }
        if let Some(data) = precheck_data {
            text.push('\n');
            text.push_str(&format_precheck_data(data));
        }
        text.push('\n');
        text.push_str(&format_turn(&turn.messages));
        text
    }

    /// Appends the model's answer to the conversation; returns its text and its tool calls
    /// as (id, name, input).
    fn record_reply(&mut self, blocks: Vec<ContentBlock>) -> (String, Vec<ToolCall>) {
        let reply: String = blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let calls: Vec<ToolCall> = blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::ToolUse { id, name, input } => {
                    Some((id.clone(), name.clone(), input.clone()))
                }
                _ => None,
            })
            .collect();
        // APIs reject empty text blocks and empty assistant messages.
        let mut content: Vec<ContentBlock> = blocks
            .into_iter()
            .filter(|b| !matches!(b, ContentBlock::Text { text } if text.is_empty()))
            .collect();
        if content.is_empty() {
            content.push(ContentBlock::Text {
                text: "(no reply)".into(),
            });
        }
        self.conversation.messages.push(Message {
            role: Role::Assistant,
            content,
        });
        (reply, calls)
    }

    /// Runs the calls one after another, reporting each one's activity; returns their
    /// results in call order.
    async fn run_tools(
        &self,
        turn_id: &str,
        calls: Vec<ToolCall>,
        ctx: &ToolContext,
    ) -> Vec<ContentBlock> {
        let mut results = Vec::with_capacity(calls.len());
        for (id, name, input) in calls {
            let summary = self.tools.summary(&name, &input);
            self.activity(turn_id, &name, ToolPhase::Started, &summary);
            let output = self.tools.run(&name, input, ctx).await;
            let phase = if output.is_error {
                ToolPhase::Failed
            } else {
                ToolPhase::Finished
            };
            self.activity(turn_id, &name, phase, &summary);
            results.push(ContentBlock::ToolResult {
                tool_use_id: id,
                content: output.content,
                is_error: output.is_error,
            });
        }
        results
    }

    fn activity(&self, turn_id: &str, tool: &str, phase: ToolPhase, summary: &str) {
        self.out().send(AgentMessage::ToolActivity(ToolActivity {
            turn_id: turn_id.to_owned(),
            tool: tool.to_owned(),
            phase,
            summary: summary.to_owned(),
        }));
    }

    async fn maybe_compact(&mut self, system: &str, specs: &[ToolSpec], usage: &mut Usage) {
        let window = self.hello.model.context_window;
        let estimate = compaction::estimate_prompt_tokens(
            self.conversation.last_input_tokens,
            system,
            &self.conversation.messages,
            specs,
        );
        if !compaction::needs_compaction(estimate, window) {
            return;
        }
        let result = compaction::compact(
            self.provider.as_ref(),
            &self.hello.model.model,
            self.hello.model.max_tokens,
            window,
            &self.conversation.messages,
        )
        .await;
        match result {
            Ok(Some(done)) => {
                usage.add(&done.usage);
                self.conversation.messages = done.messages;
                self.conversation.last_input_tokens = None;
                self.out().log(
                    LogLevel::Info,
                    format!(
                        "compacted the conversation: {} older messages summarized (prompt was about {estimate} of {window} tokens)",
                        done.summarized
                    ),
                );
            }
            Ok(None) => tracing::debug!(estimate, "prompt is large but nothing can be summarized"),
            Err(e) => self.out().log(
                LogLevel::Warn,
                format!(
                    "compacting the conversation failed ({e}); continuing with the full history"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ModelResponse, StopReason};
    use async_trait::async_trait;
    use nanoclaw_protocol::{ChatMessage, ChatRef, GroupInfo, ModelConfig};
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// Answers every request with the next scripted response (the last one repeats).
    struct Fake {
        replies: Mutex<Vec<Result<ModelResponse, ProviderError>>>,
        seen: Arc<Mutex<Vec<ModelRequest>>>,
    }

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn complete(
            &self,
            request: &ModelRequest,
            on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
        ) -> Result<ModelResponse, ProviderError> {
            self.seen.lock().unwrap().push(request.clone());
            let mut replies = self.replies.lock().unwrap();
            let next = if replies.len() > 1 {
                replies.remove(0)
            } else {
                match &replies[0] {
                    Ok(r) => Ok(r.clone()),
                    Err(_) => replies.remove(0),
                }
            };
            if let Ok(r) = &next {
                for b in &r.content {
                    if let ContentBlock::Text { text } = b {
                        on_text(text);
                    }
                }
            }
            next
        }
    }

    fn text(t: &str) -> ModelResponse {
        ModelResponse {
            content: vec![ContentBlock::Text { text: t.into() }],
            stop_reason: StopReason::EndTurn,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 2,
                ..Usage::default()
            },
        }
    }

    fn bash_call() -> ModelResponse {
        ModelResponse {
            content: vec![ContentBlock::ToolUse {
                id: "tu".into(),
                name: "bash".into(),
                input: json!({"command": "true"}),
            }],
            stop_reason: StopReason::ToolUse,
            usage: Usage::default(),
        }
    }

    fn hello() -> Hello {
        Hello {
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
            session_id: "s".into(),
            group: GroupInfo {
                id: "g".into(),
                name: "G".into(),
                folder: "g".into(),
                is_main: false,
            },
            model: ModelConfig {
                provider: "fake".into(),
                model: "m".into(),
                max_tokens: 100,
                context_window: 100_000,
                stream_idle_timeout_secs: None,
            },
            assistant_name: "Andy".into(),
            timezone: None,
            skills: Vec::new(),
            mcp_servers: Vec::new(),
        }
    }

    fn turn(id: &str, text: &str) -> Turn {
        Turn {
            turn_id: id.into(),
            messages: vec![ChatMessage {
                id: "1".into(),
                sender: "u".into(),
                sender_name: None,
                time: "t".into(),
                chat: ChatRef {
                    channel: "terminal".into(),
                    chat_id: "c".into(),
                    thread: None,
                },
                text: text.into(),
            }],
            local_time: None,
            task: None,
        }
    }

    fn agent(
        ws: &std::path::Path,
        replies: Vec<Result<ModelResponse, ProviderError>>,
    ) -> (
        Agent,
        mpsc::UnboundedReceiver<AgentMessage>,
        Arc<Mutex<Vec<ModelRequest>>>,
    ) {
        let (outbox, rx) = Outbox::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            replies: Mutex::new(replies),
            seen: seen.clone(),
        };
        let env = AgentEnv {
            relay: Upstream::Unix(ws.join("none.sock")),
            workspace: ws.to_path_buf(),
            global_dir: None,
        };
        let agent = Agent::new(Box::new(fake), hello(), env, HostLink::new(outbox));
        (agent, rx, seen)
    }

    async fn last_message(rx: &mut mpsc::UnboundedReceiver<AgentMessage>) -> AgentMessage {
        let mut last = None;
        while let Ok(m) = rx.try_recv() {
            last = Some(m);
        }
        last.unwrap()
    }

    #[tokio::test]
    async fn failed_turn_is_rolled_back_and_reported_with_the_api_message() {
        let ws = tempfile::tempdir().unwrap();
        let err = ProviderError::Api {
            provider: "fake",
            status: 529,
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
            retryable: true,
        };
        let (mut agent, mut rx, _) = agent(ws.path(), vec![Err(err), Ok(text("fine"))]);
        agent.run_turn(turn("t1", "hello")).await;
        agent.out().flush().await;
        match last_message(&mut rx).await {
            AgentMessage::TurnFailed {
                error, retryable, ..
            } => {
                assert!(error.contains("Overloaded"), "{error}");
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(agent.conversation().messages.is_empty());
        agent.run_turn(turn("t2", "again")).await;
        assert_eq!(agent.conversation().messages.len(), 2);
    }

    #[tokio::test]
    async fn tool_loop_is_capped_with_a_clear_message() {
        let ws = tempfile::tempdir().unwrap();
        let (mut agent, mut rx, seen) = agent(ws.path(), vec![Ok(bash_call())]);
        agent.run_turn(turn("t1", "loop forever")).await;
        agent.out().flush().await;
        match last_message(&mut rx).await {
            AgentMessage::TurnFinished(f) => {
                assert!(f.reply.contains("stopped after 40 rounds"), "{}", f.reply);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.lock().unwrap().len(), MAX_TOOL_ROUNDS);
        // History still alternates and ends with the assistant's note.
        let msgs = &agent.conversation().messages;
        assert_eq!(msgs.last().unwrap().role, Role::Assistant);
        for pair in msgs.windows(2) {
            assert_ne!(pair[0].role, pair[1].role);
        }
    }

    #[tokio::test]
    async fn memory_edits_apply_on_the_next_turn() {
        let ws = tempfile::tempdir().unwrap();
        let (mut agent, _rx, seen) = agent(ws.path(), vec![Ok(text("ok"))]);
        agent.run_turn(turn("t1", "a")).await;
        std::fs::write(ws.path().join("AGENTS.md"), "User likes tea.").unwrap();
        agent.run_turn(turn("t2", "b")).await;
        let seen = seen.lock().unwrap();
        assert!(!seen[0].system.contains("User likes tea."));
        assert!(seen[1].system.contains("User likes tea."));
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| PathBuf::from(v))
        }
    }

    #[test]
    fn env_selects_the_tcp_relay_with_its_token() {
        let env = AgentEnv::from_lookup(lookup(&[
            (contract::env::MODEL_TCP, "192.168.64.1:4100"),
            (contract::env::MODEL_TOKEN, "abc123"),
            (contract::env::WORKSPACE, "/w"),
        ]))
        .unwrap();
        assert_eq!(
            env.relay,
            Upstream::Tcp {
                addr: "192.168.64.1:4100".into(),
                token: "abc123".into()
            }
        );
        let model_socket = format!(
            "{}/{}",
            contract::paths::RUN,
            contract::paths::MODEL_SOCKET_NAME
        );
        let env = AgentEnv::from_lookup(lookup(&[
            (contract::env::MODEL_SOCKET, &model_socket),
            (contract::env::WORKSPACE, "/w"),
        ]))
        .unwrap();
        assert_eq!(env.relay, Upstream::Unix(model_socket.into()));
    }

    #[test]
    fn env_rejects_incomplete_or_ambiguous_tcp_settings() {
        let cases: [(&'static [(&'static str, &'static str)], &str); 4] = [
            (
                &[(contract::env::MODEL_TCP, "10.0.0.1:9")],
                contract::env::MODEL_TOKEN,
            ),
            (
                &[
                    (contract::env::MODEL_TCP, "10.0.0.1"),
                    (contract::env::MODEL_TOKEN, "t"),
                ],
                "host:port",
            ),
            (
                &[
                    (contract::env::MODEL_TCP, "10.0.0.1:9"),
                    (contract::env::MODEL_TOKEN, "a b"),
                ],
                "whitespace",
            ),
            (
                &[
                    (contract::env::MODEL_TCP, "10.0.0.1:9"),
                    (contract::env::MODEL_TOKEN, "t"),
                    (contract::env::MODEL_SOCKET, "/s"),
                ],
                "both",
            ),
        ];
        for (pairs, expected) in cases {
            let err = AgentEnv::from_lookup(lookup(pairs))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn env_requires_the_model_socket() {
        let err = AgentEnv::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains(contract::env::MODEL_SOCKET));
        let env = AgentEnv::from_lookup(|k| {
            (k != contract::env::MODEL_TCP && k != contract::env::MODEL_TOKEN)
                .then(|| PathBuf::from(format!("/x/{k}")))
        })
        .unwrap();
        assert_eq!(
            env.workspace,
            PathBuf::from(format!("/x/{}", contract::env::WORKSPACE))
        );
        assert_eq!(
            env.relay,
            Upstream::Unix(PathBuf::from(format!("/x/{}", contract::env::MODEL_SOCKET)))
        );
    }
}
