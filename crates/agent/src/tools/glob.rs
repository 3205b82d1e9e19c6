//! `glob`: finds files by name pattern.

use std::path::PathBuf;

use async_trait::async_trait;
use globset::GlobBuilder;
use serde::Deserialize;
use serde_json::{Value, json};
use walkdir::WalkDir;

use super::{Tool, ToolContext, ToolOutput, blocking, parse_input, str_field};
use crate::provider::ToolSpec;

pub struct GlobTool;

const MAX_RESULTS: usize = 500;

#[derive(Deserialize)]
struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

#[async_trait]
impl Tool for GlobTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "glob".into(),
            description: format!(
                "Find files whose path (relative to `path`, default the workspace) matches a \
                 glob pattern such as `**/*.md` or `notes/*.txt`. `*` does not cross `/`; `**` \
                 does. Results are sorted; at most {MAX_RESULTS} are listed."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string", "description": "Directory to search from."}
                },
                "required": ["pattern"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        str_field(input, "pattern").to_owned()
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("glob", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let matcher = match GlobBuilder::new(&input.pattern)
            .literal_separator(true)
            .build()
        {
            Ok(g) => g.compile_matcher(),
            Err(e) => return ToolOutput::error(format!("invalid glob pattern: {e}")),
        };
        let base = input
            .path
            .as_deref()
            .map_or_else(|| ctx.workspace.clone(), |p| ctx.resolve(p));
        let ctx = ctx.clone();
        blocking(move || {
            if !base.is_dir() {
                return ToolOutput::error(format!("not a directory: {}", ctx.display(&base)));
            }
            let mut found: Vec<PathBuf> = WalkDir::new(&base)
                .min_depth(1)
                .into_iter()
                .filter_entry(|e| e.file_name() != ".git")
                .filter_map(Result::ok)
                .filter(|e| !e.file_type().is_dir())
                .filter(|e| {
                    e.path()
                        .strip_prefix(&base)
                        .is_ok_and(|rel| matcher.is_match(rel))
                })
                .map(walkdir::DirEntry::into_path)
                .collect();
            found.sort();
            if found.is_empty() {
                return ToolOutput::ok(format!("no files match {}", input.pattern));
            }
            let total = found.len();
            let mut out: Vec<String> = found
                .iter()
                .take(MAX_RESULTS)
                .map(|p| ctx.display(p))
                .collect();
            if total > MAX_RESULTS {
                out.push(format!(
                    "[… {} more not shown; narrow the pattern]",
                    total - MAX_RESULTS
                ));
            }
            ToolOutput::ok(out.join("\n"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn matches_sorted_and_respects_separators() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.md", "a.md", "sub/c.md", "sub/d.txt", ".git/x.md"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let (ctx, _rx) = ctx(dir.path());
        let out = GlobTool.run(json!({"pattern": "**/*.md"}), &ctx).await;
        assert_eq!(out.content, "a.md\nb.md\nsub/c.md");
        let out = GlobTool.run(json!({"pattern": "*.md"}), &ctx).await;
        assert_eq!(out.content, "a.md\nb.md");
        let out = GlobTool
            .run(json!({"pattern": "*.txt", "path": "sub"}), &ctx)
            .await;
        assert_eq!(out.content, "sub/d.txt");
        let out = GlobTool
            .run(json!({"pattern": "a[", "path": "sub"}), &ctx)
            .await;
        assert!(out.is_error);
    }
}
