//! Message types on the wire. Every message is an object tagged by `"type"`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Host → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// First message of every session: versions and the agent's configuration.
    Hello(Hello),
    /// A batch of chat messages the agent must answer.
    Turn(Turn),
    /// The host's answer to an [`AgentMessage::Request`].
    RequestResult(RequestResult),
    /// Finish the current turn (if any) and exit cleanly.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_major: u32,
    pub protocol_minor: u32,
    pub session_id: String,
    pub group: GroupInfo,
    pub model: ModelConfig,
    /// The assistant's name as users address it, e.g. `Andy`.
    pub assistant_name: String,
    /// IANA time zone of the group, e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The group's enabled skills (since 1.6), dependencies first. The system prompt lists
    /// their names and descriptions; the agent reads a skill's files when it uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<SkillInfo>,
    /// MCP servers the agent starts inside the sandbox (since 1.6): the group's own and those
    /// of its enabled skills. Their tools are offered to the model as `<server>__<tool>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
}

/// An enabled skill as the agent sees it (since 1.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillInfo {
    pub name: String,
    pub description: String,
    /// The skill's folder inside the sandbox (read-only), under [`crate::contract::paths::SKILLS`].
    pub path: String,
    /// Script-backed tools the skill registers (its `skill.toml` `[[tools]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<SkillTool>,
}

/// A tool backed by a script in a skill's folder (since 1.6). The agent runs the script in the
/// sandbox with the tool's JSON input on stdin and returns its stdout to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillTool {
    pub name: String,
    pub description: String,
    /// Path of the script relative to the skill's folder, e.g. `scripts/issues.py`.
    pub script: String,
    /// A JSON Schema object for the tool's input.
    pub input_schema: Value,
}

/// A stdio MCP server the agent starts inside the sandbox (since 1.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    /// Unique among the session's servers: `[A-Za-z0-9_-]`, at most 64 characters.
    pub name: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// The skill that declared it; absent for a server from the group's own configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub folder: String,
    /// The owner's main group: it gets admin tools in later versions.
    #[serde(default)]
    pub is_main: bool,
}

/// Which model the agent talks to. The agent never learns a key: it reaches the model
/// through the host relay, which injects credentials on the host side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `anthropic` or `openai` (any OpenAI-compatible Chat Completions server).
    pub provider: String,
    pub model: String,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Tokens the model's context window holds; compaction starts before it fills.
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    /// Seconds a model response may send nothing (no headers, no stream bytes) before the
    /// agent gives up on that attempt and retries it (since 1.3). Absent: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_secs: Option<u64>,
}

fn default_max_tokens() -> u32 {
    4096
}
fn default_context_window() -> u32 {
    200_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Host-chosen id; every agent message about this turn carries it.
    pub turn_id: String,
    pub messages: Vec<ChatMessage>,
    /// The current time in the group's zone, RFC 3339 with its offset (since 1.2). The agent shows
    /// it to the model so "every weekday at 9am" means 9am where the user is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    /// Set when this turn is a run of a scheduled task (since 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRun>,
}

/// A scheduled task's run, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    pub task_id: String,
    /// The fire time it was scheduled for, RFC 3339 in the task's zone.
    pub scheduled_for: String,
    /// How late the run starts (after downtime), when it is late at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_by_secs: Option<u64>,
    /// A pre-check script: run in the sandbox before the model is called; its last stdout line is
    /// `{"wakeAgent": bool, "data": …}` and the model is called only when `wakeAgent` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Run in a fresh, empty conversation each time (nothing is kept), not the group's ongoing one.
    /// The task's prompt is the text of the turn's one message.
    #[serde(default)]
    pub isolated: bool,
}

/// One inbound chat message as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The host's id of the stored inbound row.
    pub id: String,
    pub sender: String,
    #[serde(default)]
    pub sender_name: Option<String>,
    /// RFC 3339 time the message was received.
    pub time: String,
    pub chat: ChatRef,
    pub text: String,
}

/// Where a message came from / where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatRef {
    /// Channel type, e.g. `terminal`, `telegram`.
    pub channel: String,
    /// The chat's id on that platform.
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestResult {
    pub request_id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// Agent → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Handshake answer: the agent accepted the host's hello.
    Ready(Ready),
    /// A piece of the reply text, as the model streams it.
    TextDelta { turn_id: String, text: String },
    /// A tool started or finished (for typing indicators, logs and the terminal).
    ToolActivity(ToolActivity),
    /// Something only the host may do; the host authorizes it and answers with
    /// [`HostMessage::RequestResult`].
    Request(Request),
    /// A leading piece of a reply too long for one line (since 1.3): the host joins every
    /// `reply_part` of the turn, in order, in front of the `turn_finished` reply.
    ReplyPart { turn_id: String, text: String },
    /// The turn is answered. `reply` is the text to deliver to the turn's chat (empty when
    /// the agent chose not to answer, e.g. it already used `send_message`).
    TurnFinished(TurnFinished),
    /// The turn could not be completed.
    TurnFailed {
        turn_id: String,
        error: String,
        /// Whether trying the same turn again may help (e.g. the model was overloaded).
        retryable: bool,
    },
    /// A log line the host records under the session's span.
    Log { level: LogLevel, message: String },
    /// The agent cannot go on (bad handshake, broken configuration). It exits after this.
    Fatal { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub protocol_major: u32,
    pub protocol_minor: u32,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolActivity {
    pub turn_id: String,
    pub tool: String,
    pub phase: ToolPhase,
    /// One line for humans, e.g. the command bash runs.
    #[serde(default)]
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolPhase {
    Started,
    Finished,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    pub turn_id: String,
    pub action: RequestAction,
}

/// Actions the agent asks the host to perform. The host checks every one: the agent's
/// requests are untrusted input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RequestAction {
    /// Send a message to the chat the turn came from.
    SendMessage {
        /// May be empty when `files` is not.
        text: String,
        /// Files to attach (since 1.4), as the agent sees them: absolute under
        /// [`crate::contract::paths::WORKSPACE`] or relative to it. The host checks each one
        /// (inside the group folder, a regular file, within the size limit) and sends a copy.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<String>,
    },
    /// Main group only: every agent group with its chats.
    ListGroups,
    /// Main group only: wire a chat to an agent group (created when `folder` is new).
    RegisterChat {
        /// Channel type, e.g. `telegram`.
        channel: String,
        /// The chat's id on that platform.
        chat_id: String,
        /// The agent group's folder (`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`).
        folder: String,
        /// A name for the group when it is created.
        #[serde(default)]
        name: Option<String>,
        /// Whether messages must contain the group's trigger (default true).
        #[serde(default = "default_true")]
        requires_trigger: bool,
    },
    /// Main group only (since 1.6): change a group's trigger word, model provider, model or
    /// time zone, as the owner asked in the main chat. Only the fields given change; the host
    /// checks each and records the change in the audit log.
    UpdateGroup {
        /// The group's folder; absent: the main group itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<String>,
        /// `anthropic` or `openai`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// An IANA zone (`Europe/Berlin`), or `host` for the host's zone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    /// Create a scheduled task for this group (the main group may name another group).
    ScheduleTask {
        /// What to do at each run, written as a request to the assistant.
        prompt: String,
        /// A cron expression ("0 9 * * 1-5"), an interval ("every 30m"), a relative time
        /// ("in 20 minutes") or a local date-time ("2026-11-27 09:00"), in the group's zone.
        schedule: String,
        /// Optional pre-check script (see [`TaskRun::script`]).
        #[serde(default)]
        script: Option<String>,
        /// Run in a fresh conversation each time instead of the group's ongoing one.
        #[serde(default)]
        isolated: bool,
        /// Main group only: the folder of the group the task belongs to.
        #[serde(default)]
        group: Option<String>,
    },
    /// The tasks of this group (the main group: of every group).
    ListTasks,
    /// Change a task's prompt, schedule or script; only the fields given change.
    UpdateTask {
        task_id: String,
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        schedule: Option<String>,
        /// `""` removes the script.
        #[serde(default)]
        script: Option<String>,
    },
    PauseTask {
        task_id: String,
    },
    ResumeTask {
        task_id: String,
    },
    CancelTask {
        task_id: String,
    },
    /// Keep a memory in this group's memory store (since 1.5). The host answers with its `id`.
    MemorySave {
        text: String,
        /// `shared` (the default) or `skill:<name>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// Search this group's memories (since 1.5): every namespace unless one is named. The host
    /// answers with the best matches, best first.
    MemorySearch {
        query: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Forget one of this group's memories by id (since 1.5).
    MemoryForget {
        id: i64,
    },
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnFinished {
    pub turn_id: String,
    pub reply: String,
    pub usage: Usage,
    /// For a task turn with a pre-check script: what the script decided (since 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckOutcome>,
}

/// What a task's pre-check script said. `woke: false` means the model was not called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecheckOutcome {
    pub woke: bool,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_message_files_round_trip_and_old_agents_still_parse() {
        let with_files = RequestAction::SendMessage {
            text: "the report".into(),
            files: vec!["/workspace/group/out/report.pdf".into(), "chart.png".into()],
        };
        let json = serde_json::to_value(&with_files).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"action": "send_message", "text": "the report",
                "files": ["/workspace/group/out/report.pdf", "chart.png"]})
        );
        assert_eq!(
            serde_json::from_value::<RequestAction>(json).unwrap(),
            with_files
        );
        // A 1.3 agent sends no `files`; a 1.4 agent without files sends none either.
        let old: RequestAction =
            serde_json::from_str(r#"{"action":"send_message","text":"hi"}"#).unwrap();
        assert_eq!(
            old,
            RequestAction::SendMessage {
                text: "hi".into(),
                files: Vec::new()
            }
        );
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"action":"send_message","text":"hi"}"#
        );
    }
}
