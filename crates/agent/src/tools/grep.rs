//! `grep`: searches file contents with a regular expression.

use std::io::Read;
use std::path::Path;

use async_trait::async_trait;
use globset::Glob;
use regex::RegexBuilder;
use serde::Deserialize;
use serde_json::{Value, json};
use walkdir::WalkDir;

use super::{Tool, ToolContext, ToolOutput, blocking, looks_binary, parse_input, str_field};
use crate::format::truncate_chars;
use crate::provider::ToolSpec;

pub struct GrepTool;

const MAX_MATCHES: usize = 300;
const MAX_LINE_CHARS: usize = 400;
/// Larger files are skipped: they are logs or data, better searched with bash.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Deserialize)]
struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
}

#[async_trait]
impl Tool for GrepTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "grep".into(),
            description: format!(
                "Search file contents with a regular expression (Rust regex syntax). Prints \
                 `file:line:text` for each matching line, at most {MAX_MATCHES}. `path` is a \
                 file or directory (default the workspace); `glob` filters file names, e.g. \
                 `*.md`. Binary files are skipped."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string"},
                    "glob": {"type": "string"},
                    "case_insensitive": {"type": "boolean", "default": false}
                },
                "required": ["pattern"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        let path = str_field(input, "path");
        let pattern = str_field(input, "pattern");
        if path.is_empty() {
            pattern.to_owned()
        } else {
            format!("{pattern} in {path}")
        }
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("grep", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let regex = match RegexBuilder::new(&input.pattern)
            .case_insensitive(input.case_insensitive)
            .size_limit(1 << 22)
            .build()
        {
            Ok(r) => r,
            Err(e) => return ToolOutput::error(format!("invalid regex: {e}")),
        };
        let filter = match input.glob.as_deref().map(Glob::new).transpose() {
            Ok(g) => g.map(|g| g.compile_matcher()),
            Err(e) => return ToolOutput::error(format!("invalid glob filter: {e}")),
        };
        let base = input
            .path
            .as_deref()
            .map_or_else(|| ctx.workspace.clone(), |p| ctx.resolve(p));
        let ctx = ctx.clone();
        blocking(move || {
            if !base.exists() {
                return ToolOutput::error(format!("path not found: {}", ctx.display(&base)));
            }
            let mut files: Vec<_> = WalkDir::new(&base)
                .into_iter()
                .filter_entry(|e| e.file_name() != ".git")
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .filter(|e| match &filter {
                    None => true,
                    Some(m) => {
                        let rel = e.path().strip_prefix(&base).unwrap_or(e.path());
                        m.is_match(rel) || m.is_match(e.file_name())
                    }
                })
                .map(walkdir::DirEntry::into_path)
                .collect();
            files.sort();
            let mut out = Vec::new();
            let mut total = 0usize;
            for file in &files {
                let Some(text) = read_text(file) else {
                    continue;
                };
                for (i, line) in text.lines().enumerate() {
                    if regex.is_match(line) {
                        total += 1;
                        if out.len() < MAX_MATCHES {
                            out.push(format!(
                                "{}:{}:{}",
                                ctx.display(file),
                                i + 1,
                                truncate_chars(line, MAX_LINE_CHARS)
                            ));
                        }
                    }
                }
            }
            if total == 0 {
                return ToolOutput::ok("no matches");
            }
            if total > out.len() {
                out.push(format!(
                    "[… {} more matches not shown; narrow the pattern or path]",
                    total - out.len()
                ));
            }
            ToolOutput::ok(out.join("\n"))
        })
        .await
    }
}

/// The file as text, or None for binary, unreadable or oversized files.
fn read_text(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).ok()?;
    if looks_binary(&bytes) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn finds_lines_filters_by_glob_and_skips_binaries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.md"), "Alpha\nbeta\nALPHA again\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "alpha in txt\n").unwrap();
        std::fs::write(dir.path().join("bin.dat"), b"alpha\0\x01").unwrap();
        let (ctx, _rx) = ctx(dir.path());

        let out = GrepTool
            .run(json!({"pattern": "alpha", "case_insensitive": true}), &ctx)
            .await;
        assert_eq!(
            out.content,
            "a.md:1:Alpha\na.md:3:ALPHA again\nsub/b.txt:1:alpha in txt"
        );

        let out = GrepTool
            .run(json!({"pattern": "alpha", "glob": "*.txt"}), &ctx)
            .await;
        assert_eq!(out.content, "sub/b.txt:1:alpha in txt");

        let out = GrepTool.run(json!({"pattern": "zzz"}), &ctx).await;
        assert_eq!(out.content, "no matches");
        let out = GrepTool.run(json!({"pattern": "("}), &ctx).await;
        assert!(out.is_error && out.content.contains("invalid regex"));
    }
}
