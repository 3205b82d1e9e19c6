//! `<skill>__<tool>`: a script-backed tool a skill registers (`skill.toml` `[[tools]]`). The
//! script runs in the sandbox like a bash command (same environment, limits and timeout), in
//! the workspace, with the tool's JSON input on stdin; its stdout is the result.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::{SkillInfo, SkillTool};
use serde_json::Value;
use tokio::process::Command;

use super::bash::{DEFAULT_TIMEOUT_SECS, HEAD_BYTES, TAIL_BYTES};
use super::{Capture, Tool, ToolContext, ToolOutput, run_captured, signal};
use crate::mcp::tool_name;
use crate::provider::ToolSpec;

/// stderr kept for a failure's message (its end, where the cause usually is).
const STDERR_BYTES: usize = 4096;
/// Longest `#!` line read (Linux reads 256 bytes).
const SHEBANG_BYTES: usize = 256;

pub struct SkillScriptTool {
    name: String,
    skill: String,
    tool: SkillTool,
    /// The skill's folder in the sandbox.
    folder: PathBuf,
    timeout: Duration,
}

impl SkillScriptTool {
    /// The tool `tool` of `skill`; refused when its script path is absolute or climbs out of
    /// the skill's folder.
    pub fn new(skill: &SkillInfo, tool: &SkillTool) -> Result<Self, String> {
        let script = Path::new(&tool.script);
        let inside = !tool.script.is_empty()
            && script
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(format!(
                "the script {:?} of tool `{}` is not a path inside the skill's folder",
                tool.script, tool.name
            ));
        }
        Ok(Self {
            name: tool_name(&skill.name, &tool.name),
            skill: skill.name.clone(),
            tool: tool.clone(),
            folder: PathBuf::from(&skill.path),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        })
    }

    /// The model-facing name, `<skill>__<tool>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script's real path, checked again now that links can be followed: it must still lie
    /// inside the skill's folder and be a file.
    fn script_path(&self) -> Result<PathBuf, String> {
        let folder = std::fs::canonicalize(&self.folder).map_err(|e| {
            format!(
                "the skill `{}` has no folder at {}: {e}",
                self.skill,
                self.folder.display()
            )
        })?;
        let script = std::fs::canonicalize(self.folder.join(&self.tool.script)).map_err(|e| {
            format!(
                "the script {} of the skill `{}` cannot be opened: {e}",
                self.tool.script, self.skill
            )
        })?;
        if !script.starts_with(&folder) {
            return Err(format!(
                "the script {} of the skill `{}` leads outside the skill's folder; it is not run",
                self.tool.script, self.skill
            ));
        }
        if !script.is_file() {
            return Err(format!(
                "the script {} of the skill `{}` is not a file",
                self.tool.script, self.skill
            ));
        }
        Ok(script)
    }

    /// The input as an object with every field the schema requires.
    fn check_input(&self, input: Value) -> Result<Value, String> {
        let input = match input {
            Value::Null => Value::Object(serde_json::Map::new()),
            Value::Object(_) => input,
            _ => {
                return Err(format!(
                    "invalid input for {}: expected an object",
                    self.name
                ));
            }
        };
        let missing: Vec<&str> = self
            .tool
            .input_schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|field| input.get(field).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "invalid input for {}: missing required field(s) {}",
                self.name,
                missing
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(input)
    }
}

/// How to run `script`: itself when executable, else the interpreter its `#!` line names.
fn command_for(script: &Path) -> Result<Command, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(script).map_err(|e| format!("{}: {e}", script.display()))?;
    if meta.permissions().mode() & 0o111 != 0 {
        return Ok(Command::new(script));
    }
    // The `#!` line is all that is needed: read no more than the kernel would.
    let mut head = Vec::with_capacity(SHEBANG_BYTES);
    std::fs::File::open(script)
        .and_then(|f| f.take(SHEBANG_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let shebang = std::str::from_utf8(first)
        .ok()
        .and_then(|line| line.strip_prefix("#!"))
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let Some(line) = shebang else {
        return Err(format!(
            "{} is neither executable nor starts with a #! line naming its interpreter",
            script.display()
        ));
    };
    // As the kernel reads it: the interpreter, then at most one argument.
    let (interpreter, arg) = match line.split_once(char::is_whitespace) {
        Some((i, a)) => (i, Some(a.trim())),
        None => (line, None),
    };
    let mut cmd = Command::new(interpreter);
    if let Some(arg) = arg.filter(|a| !a.is_empty()) {
        cmd.arg(arg);
    }
    cmd.arg(script);
    Ok(cmd)
}

#[async_trait]
impl Tool for SkillScriptTool {
    fn spec(&self) -> ToolSpec {
        let mut schema = self.tool.input_schema.clone();
        if let Value::Object(map) = &mut schema {
            map.entry("type").or_insert_with(|| "object".into());
        } else {
            schema = serde_json::json!({"type": "object"});
        }
        ToolSpec {
            name: self.name.clone(),
            description: format!("{} (skill `{}`)", self.tool.description, self.skill),
            input_schema: schema,
        }
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input = match self.check_input(input) {
            Ok(i) => i,
            Err(e) => return ToolOutput::error(e),
        };
        let script = match self.script_path() {
            Ok(s) => s,
            Err(e) => return ToolOutput::error(e),
        };
        let mut cmd = match command_for(&script) {
            Ok(c) => c,
            Err(e) => return ToolOutput::error(e),
        };
        cmd.current_dir(&ctx.workspace);
        let stdout = Capture::new(HEAD_BYTES, TAIL_BYTES);
        let stderr = Capture::new(0, STDERR_BYTES);
        let json = input.to_string().into_bytes();
        let exit = match run_captured(cmd, Some(json), self.timeout, &stdout, &stderr).await {
            Ok(exit) => exit,
            Err(e) => {
                return ToolOutput::error(format!("could not start {}: {e}", script.display()));
            }
        };
        let out = stdout.text();
        let err = stderr.text();
        if exit.timed_out {
            return ToolOutput::error(format!(
                "{out}{}\n[timed out after {} s; the script and all its child processes were killed]",
                stderr_part(&err),
                self.timeout.as_secs()
            ));
        }
        match exit.status {
            Some(s) if s.success() => {
                if out.is_empty() {
                    ToolOutput::ok("(no output)")
                } else {
                    ToolOutput::ok(out)
                }
            }
            Some(s) => {
                let how = match s.code() {
                    Some(code) => format!("exit code: {code}"),
                    None => format!("killed by signal {}", signal(s)),
                };
                ToolOutput::error(format!("{out}{}\n[{how}]", stderr_part(&err)))
            }
            None => ToolOutput::error(format!("{out}{}\n[exit status unknown]", stderr_part(&err))),
        }
    }
}

fn stderr_part(err: &str) -> String {
    if err.trim().is_empty() {
        String::new()
    } else {
        format!("\n[stderr]\n{}", err.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn skill(dir: &Path, script: &str) -> (SkillInfo, SkillTool) {
        let tool = SkillTool {
            name: "shout".into(),
            description: "Shouts the text.".into(),
            script: script.into(),
            input_schema: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            }),
        };
        let info = SkillInfo {
            name: "loud".into(),
            description: "Loud things".into(),
            path: dir.display().to_string(),
            tools: vec![tool.clone()],
        };
        (info, tool)
    }

    fn write_script(path: &Path, body: &str, executable: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[tokio::test]
    async fn the_script_gets_the_json_input_and_its_stdout_is_the_result() {
        let skill_dir = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        write_script(
            &skill_dir.path().join("scripts/shout.sh"),
            "#!/bin/sh\nread -r line\necho \"got: $line\"\npwd\n",
            true,
        );
        let (info, tool) = skill(skill_dir.path(), "scripts/shout.sh");
        let t = SkillScriptTool::new(&info, &tool).unwrap();
        assert_eq!(t.name(), "loud__shout");
        assert!(t.spec().description.contains("Shouts the text."));
        let (ctx, _rx) = ctx(ws.path());
        let out = t.run(json!({"text": "hi"}), &ctx).await;
        assert!(!out.is_error, "{out:?}");
        assert!(
            out.content.contains(r#"got: {"text":"hi"}"#),
            "{}",
            out.content
        );
        // It runs in the workspace, not in its (read-only) skill folder.
        assert!(
            out.content.contains(&ws.path().display().to_string()),
            "{}",
            out.content
        );
    }

    #[tokio::test]
    async fn a_script_without_the_exec_bit_runs_through_its_shebang() {
        let skill_dir = tempfile::tempdir().unwrap();
        write_script(
            &skill_dir.path().join("run.sh"),
            "#!/bin/sh -e\ncat\n",
            false,
        );
        let (info, tool) = skill(skill_dir.path(), "run.sh");
        let t = SkillScriptTool::new(&info, &tool).unwrap();
        let (ctx, _rx) = ctx(skill_dir.path());
        let out = t.run(json!({"text": "plain"}), &ctx).await;
        assert_eq!(out, ToolOutput::ok(r#"{"text":"plain"}"#));
    }

    #[tokio::test]
    async fn failures_show_stderr_and_the_exit_code_and_missing_fields_are_named() {
        let skill_dir = tempfile::tempdir().unwrap();
        write_script(
            &skill_dir.path().join("fail.sh"),
            "#!/bin/sh\necho partial\necho 'no such city' >&2\nexit 4\n",
            true,
        );
        let (info, tool) = skill(skill_dir.path(), "fail.sh");
        let t = SkillScriptTool::new(&info, &tool).unwrap();
        let (ctx, _rx) = ctx(skill_dir.path());
        let out = t.run(json!({"text": "x"}), &ctx).await;
        assert!(out.is_error);
        assert!(out.content.contains("partial"), "{}", out.content);
        assert!(out.content.contains("no such city"), "{}", out.content);
        assert!(out.content.contains("[exit code: 4]"), "{}", out.content);

        let out = t.run(json!({"other": 1}), &ctx).await;
        assert!(out.is_error);
        assert!(
            out.content.contains("missing required field(s) `text`"),
            "{}",
            out.content
        );
        let out = t.run(json!("text"), &ctx).await;
        assert!(out.is_error && out.content.contains("expected an object"));
    }

    #[tokio::test]
    async fn scripts_outside_the_skill_folder_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let skill_dir = root.path().join("skill");
        std::fs::create_dir_all(&skill_dir).unwrap();
        let outside = root.path().join("outside.sh");
        write_script(&outside, "#!/bin/sh\necho ESCAPED\n", true);

        for bad in ["../outside.sh", "/bin/sh", "", "a/../../outside.sh"] {
            let (info, tool) = skill(&skill_dir, bad);
            let err = SkillScriptTool::new(&info, &tool).err().unwrap();
            assert!(
                err.contains("not a path inside the skill's folder"),
                "{bad}: {err}"
            );
        }

        // A link inside the folder that leads out is caught when the tool runs.
        std::os::unix::fs::symlink(&outside, skill_dir.join("link.sh")).unwrap();
        let (info, tool) = skill(&skill_dir, "link.sh");
        let t = SkillScriptTool::new(&info, &tool).unwrap();
        let (ctx, _rx) = ctx(root.path());
        let out = t.run(json!({"text": "x"}), &ctx).await;
        assert!(out.is_error);
        assert!(
            out.content.contains("leads outside the skill's folder"),
            "{}",
            out.content
        );
        assert!(!out.content.contains("ESCAPED"));
    }
}
