//! The tools the model can call, one per file, registered in [`all_tools`].

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::format::truncate_chars;
use crate::host_link::HostLink;
use crate::provider::ToolSpec;

mod bash;
mod edit_file;
mod glob;
mod grep;
mod list_groups;
mod mcp;
mod memory;
mod read_file;
mod register_chat;
mod send_message;
mod skill_script;
mod tasks;
mod update_group;
mod write_file;

pub use bash::BashTool;
pub use edit_file::EditFileTool;
pub use glob::GlobTool;
pub use grep::GrepTool;
pub use list_groups::ListGroupsTool;
pub use mcp::McpTool;
pub use memory::{MemoryForgetTool, MemorySaveTool, MemorySearchTool};
pub use read_file::ReadFileTool;
pub use register_chat::RegisterChatTool;
pub use send_message::SendMessageTool;
pub use skill_script::SkillScriptTool;
pub use tasks::{
    CancelTaskTool, ListTasksTool, PauseTaskTool, ResumeTaskTool, ScheduleTaskTool, UpdateTaskTool,
};
pub use update_group::UpdateGroupTool;
pub use write_file::WriteFileTool;

pub(crate) use bash::{Capture, pump, run_captured, run_shell, shell, signal};

/// What a tool returns to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

/// What a tool may use while it runs.
#[derive(Clone)]
pub struct ToolContext {
    /// The group folder; relative paths resolve against it.
    pub workspace: PathBuf,
    /// The turn being answered (requests to the host carry it).
    pub turn_id: String,
    pub host: HostLink,
}

impl ToolContext {
    /// `path` as given by the model, relative ones taken from the workspace.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.workspace.join(p)
        }
    }

    /// How to show `path` to the model: relative to the workspace when inside it.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.workspace) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => path.display().to_string(),
        }
    }
}

#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;

    /// One line for humans about this call (e.g. the command bash runs).
    fn summary(&self, input: &Value) -> String {
        truncate_chars(&input.to_string(), SUMMARY_CHARS)
    }

    /// Runs the tool. Bad input and failures come back as an error output, never a panic.
    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput;
}

/// Longest ToolActivity summary.
pub const SUMMARY_CHARS: usize = 120;

/// Every tool the agent offers.
pub fn all_tools() -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(BashTool),
        Box::new(ReadFileTool),
        Box::new(WriteFileTool),
        Box::new(EditFileTool),
        Box::new(GlobTool),
        Box::new(GrepTool),
        Box::new(SendMessageTool),
        // Every group manages its own tasks; the host checks each request.
        Box::new(ScheduleTaskTool),
        Box::new(ListTasksTool),
        Box::new(UpdateTaskTool),
        Box::new(PauseTaskTool),
        Box::new(ResumeTaskTool),
        Box::new(CancelTaskTool),
        // The group's memory store; the host answers from this group's memories only.
        Box::new(MemorySaveTool),
        Box::new(MemorySearchTool),
        Box::new(MemoryForgetTool),
    ]
}

/// Tools only the owner's main group gets (the host checks again on every request).
pub fn admin_tools() -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(ListGroupsTool),
        Box::new(RegisterChatTool),
        Box::new(UpdateGroupTool),
    ]
}

/// The registered tools, looked up by name.
pub struct ToolRegistry {
    tools: Vec<Box<dyn Tool>>,
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new(all_tools())
    }
}

impl ToolRegistry {
    pub fn new(tools: Vec<Box<dyn Tool>>) -> Self {
        Self { tools }
    }

    /// Adds `tool` unless another tool already has its name; `Err` says which name clashed.
    pub fn add(&mut self, tool: Box<dyn Tool>) -> Result<(), String> {
        let name = tool.spec().name;
        if self.get(&name).is_some() {
            return Err(format!("a tool named `{name}` already exists"));
        }
        self.tools.push(tool);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&dyn Tool> {
        self.tools
            .iter()
            .find(|t| t.spec().name == name)
            .map(|t| t.as_ref())
    }

    pub fn summary(&self, name: &str, input: &Value) -> String {
        match self.get(name) {
            Some(tool) => tool.summary(input),
            None => truncate_chars(&input.to_string(), SUMMARY_CHARS),
        }
    }

    /// Runs tool `name`; an unknown name is an error for the model to read.
    pub async fn run(&self, name: &str, input: Value, ctx: &ToolContext) -> ToolOutput {
        match self.get(name) {
            Some(tool) => tool.run(input, ctx).await,
            None => {
                let known: Vec<String> = self.tools.iter().map(|t| t.spec().name).collect();
                ToolOutput::error(format!(
                    "unknown tool `{name}`; available tools: {}",
                    known.join(", ")
                ))
            }
        }
    }
}

/// Parses a tool's input object, turning a bad shape into a message the model can act on.
pub(crate) fn parse_input<T: DeserializeOwned>(tool: &str, input: Value) -> Result<T, ToolOutput> {
    serde_json::from_value(input)
        .map_err(|e| ToolOutput::error(format!("invalid input for {tool}: {e}")))
}

/// The input of a tool that asks the host, deserialized straight into the protocol's
/// [`RequestAction`]: each such tool is named like its action, so the tool's name is the
/// action tag and the input's fields are the action's. A malformed call gets serde's error
/// naming the missing or mistyped field. `null` reads as no fields.
pub(crate) fn parse_action(tool: &str, input: Value) -> Result<RequestAction, ToolOutput> {
    let mut fields = match input {
        Value::Object(fields) => fields,
        Value::Null => serde_json::Map::new(),
        _ => {
            return Err(ToolOutput::error(format!(
                "invalid input for {tool}: expected an object"
            )));
        }
    };
    fields.insert("action".into(), Value::String(tool.into()));
    parse_input(tool, Value::Object(fields))
}

/// Sends `action` to the host and waits up to `timeout`: the host's data, or the tool's error
/// (`refused` and the host's reason, e.g. "the host refused: …").
pub(crate) async fn ask_host(
    ctx: &ToolContext,
    action: RequestAction,
    timeout: std::time::Duration,
    refused: &str,
) -> Result<Value, ToolOutput> {
    match ctx.host.request(&ctx.turn_id, action, timeout).await {
        Ok(result) if result.ok => Ok(result.data),
        Ok(result) => Err(ToolOutput::error(format!(
            "{refused}: {}",
            result.error.as_deref().unwrap_or("no reason given")
        ))),
        Err(e) => Err(ToolOutput::error(e.to_string())),
    }
}

/// The error for a parsed action of another kind than the tool's own (cannot happen: the
/// action tag is the tool's name).
pub(crate) fn not_this_action(tool: &str) -> ToolOutput {
    ToolOutput::error(format!("invalid input for {tool}: not a {tool} request"))
}

/// The string field `field` of `input`, for summaries.
pub(crate) fn str_field<'a>(input: &'a Value, field: &str) -> &'a str {
    input.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Runs blocking filesystem work off the async threads.
pub(crate) async fn blocking<F>(f: F) -> ToolOutput
where
    F: FnOnce() -> ToolOutput + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| ToolOutput::error(format!("the tool stopped unexpectedly: {e}")))
}

/// Keeps the first and last parts of `text` when it is longer than `max` chars, saying
/// how much was cut.
pub(crate) fn cap_head_tail(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let head_n = max / 2;
    let tail_n = max - head_n;
    let head: String = text.chars().take(head_n).collect();
    let tail: String = text.chars().skip(total - tail_n).collect();
    format!(
        "{head}\n\n[… {} characters cut …]\n\n{tail}",
        total - head_n - tail_n
    )
}

/// Whether the start of a file looks binary (contains NUL bytes).
pub(crate) fn looks_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8192).any(|&b| b == 0)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::host_link::Outbox;
    use nanoclaw_protocol::AgentMessage;
    use tokio::sync::mpsc::UnboundedReceiver;

    pub fn ctx(dir: &Path) -> (ToolContext, UnboundedReceiver<AgentMessage>) {
        let (outbox, rx) = Outbox::channel();
        (
            ToolContext {
                workspace: dir.to_path_buf(),
                turn_id: "t1".into(),
                host: HostLink::new(outbox),
            },
            rx,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_are_unique_and_schemas_are_objects() {
        let reg = ToolRegistry::default();
        let mut names: Vec<String> = reg.specs().into_iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for spec in reg.specs() {
            assert_eq!(spec.input_schema["type"], "object", "{}", spec.name);
        }
    }

    #[tokio::test]
    async fn unknown_tool_and_bad_input_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = test_util::ctx(dir.path());
        let reg = ToolRegistry::default();
        let out = reg.run("nope", json!({}), &ctx).await;
        assert!(out.is_error && out.content.contains("bash"), "{out:?}");
        for spec in reg.specs() {
            // A tool without required fields (list_tasks) takes `{}`, so only a non-object
            // is bad input for it.
            let takes_fields = spec.input_schema["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            let bad_inputs = if takes_fields {
                vec![json!({}), json!("str"), json!({"path": 5, "command": [1]})]
            } else {
                vec![json!("str")]
            };
            for bad in bad_inputs {
                let out = reg.run(&spec.name, bad, &ctx).await;
                assert!(out.is_error, "{} accepted bad input: {out:?}", spec.name);
            }
        }
    }

    #[test]
    fn a_tool_whose_name_is_taken_is_refused() {
        let mut reg = ToolRegistry::default();
        let n = reg.len();
        let err = reg.add(Box::new(BashTool)).unwrap_err();
        assert!(err.contains("`bash` already exists"), "{err}");
        let skill = nanoclaw_protocol::SkillInfo {
            name: "s".into(),
            description: "d".into(),
            path: "/nowhere".into(),
            tools: Vec::new(),
        };
        let tool = |name: &str| nanoclaw_protocol::SkillTool {
            name: name.into(),
            description: "d".into(),
            script: "run.sh".into(),
            input_schema: json!({"type": "object"}),
        };
        // `a.b` and `a_b` both become `s__a_b`: the second is refused.
        reg.add(Box::new(
            SkillScriptTool::new(&skill, &tool("a.b")).unwrap(),
        ))
        .unwrap();
        let err = reg
            .add(Box::new(
                SkillScriptTool::new(&skill, &tool("a_b")).unwrap(),
            ))
            .unwrap_err();
        assert!(err.contains("`s__a_b` already exists"), "{err}");
        assert_eq!(reg.len(), n + 1);
    }

    #[test]
    fn head_tail_cap_says_how_much_was_cut() {
        let text = format!("{}{}", "a".repeat(100), "b".repeat(100));
        let out = cap_head_tail(&text, 20);
        assert!(out.starts_with("aaaaaaaaaa\n"));
        assert!(out.ends_with("\nbbbbbbbbbb"));
        assert!(out.contains("180 characters cut"), "{out}");
    }
}
