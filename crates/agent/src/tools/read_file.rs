//! `read_file`: shows a text file with line numbers.

use std::io::{BufRead, BufReader, Read};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, blocking, looks_binary, parse_input, str_field};
use crate::provider::ToolSpec;

pub struct ReadFileTool;

const DEFAULT_LIMIT: usize = 2000;
const MAX_LINE_CHARS: usize = 2000;
const MAX_OUTPUT_CHARS: usize = 60_000;

#[derive(Deserialize)]
struct Input {
    path: String,
    /// 1-based first line.
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

#[async_trait]
impl Tool for ReadFileTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: format!(
                "Read a text file; lines are numbered. Relative paths are taken from the \
                 workspace. Use offset (1-based first line) and limit (number of lines, default \
                 {DEFAULT_LIMIT}) for large files."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 1},
                    "limit": {"type": "integer", "minimum": 1}
                },
                "required": ["path"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        str_field(input, "path").to_owned()
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("read_file", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let path = ctx.resolve(&input.path);
        let shown = ctx.display(&path);
        let offset = input.offset.unwrap_or(1).max(1);
        let limit = input.limit.unwrap_or(DEFAULT_LIMIT).max(1);
        blocking(move || read(&path, &shown, offset, limit)).await
    }
}

fn read(path: &std::path::Path, shown: &str, offset: usize, limit: usize) -> ToolOutput {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ToolOutput::error(format!("file not found: {shown}"));
        }
        Err(e) => return ToolOutput::error(format!("cannot read {shown}: {e}")),
    };
    if meta.is_dir() {
        return ToolOutput::error(format!(
            "{shown} is a directory, not a file; use glob or `ls` in bash to list it"
        ));
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return ToolOutput::error(format!("cannot open {shown}: {e}")),
    };
    let mut reader = BufReader::new(file);
    let mut start = Vec::new();
    if let Err(e) = reader.by_ref().take(8192).read_to_end(&mut start) {
        return ToolOutput::error(format!("cannot read {shown}: {e}"));
    }
    if looks_binary(&start) {
        return ToolOutput::error(format!(
            "{shown} is a binary file ({} bytes); it cannot be shown as text",
            meta.len()
        ));
    }
    let reader = BufReader::new(std::io::Cursor::new(start).chain(reader));
    let mut out = String::new();
    let mut total_lines = 0usize;
    let mut shown_lines = 0usize;
    let mut cut_for_size = false;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return ToolOutput::error(format!("cannot read {shown}: {e}")),
        };
        total_lines = i + 1;
        let n = i + 1;
        if n < offset || shown_lines >= limit || cut_for_size {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let text = if text.chars().count() > MAX_LINE_CHARS {
            let cut: String = text.chars().take(MAX_LINE_CHARS).collect();
            format!("{cut} [… line cut]")
        } else {
            text.to_owned()
        };
        let entry = format!("{n:>6}\t{text}\n");
        if out.len() + entry.len() > MAX_OUTPUT_CHARS {
            cut_for_size = true;
            continue;
        }
        out.push_str(&entry);
        shown_lines += 1;
    }
    if total_lines == 0 {
        return ToolOutput::ok(format!("({shown} is empty)"));
    }
    if shown_lines == 0 {
        return ToolOutput::error(format!(
            "{shown} has {total_lines} lines; offset {offset} is past the end"
        ));
    }
    let last = offset + shown_lines - 1;
    if last < total_lines {
        out.push_str(&format!(
            "[showing lines {offset}-{last} of {total_lines}; use offset/limit to read more]\n"
        ));
    }
    ToolOutput::ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn numbers_lines_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\ntwo\nthree\n").unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = ReadFileTool.run(json!({"path": "a.txt"}), &ctx).await;
        assert_eq!(out.content, "     1\tone\n     2\ttwo\n     3\tthree\n");
        let out = ReadFileTool
            .run(json!({"path": "a.txt", "offset": 2, "limit": 1}), &ctx)
            .await;
        assert_eq!(
            out.content,
            "     2\ttwo\n[showing lines 2-2 of 3; use offset/limit to read more]\n"
        );
    }

    #[tokio::test]
    async fn missing_directory_and_binary_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("bin"), b"\x7fELF\0\0\x01").unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = ReadFileTool.run(json!({"path": "nope.txt"}), &ctx).await;
        assert!(
            out.is_error && out.content.contains("file not found: nope.txt"),
            "{out:?}"
        );
        let out = ReadFileTool.run(json!({"path": "sub"}), &ctx).await;
        assert!(
            out.is_error && out.content.contains("is a directory"),
            "{out:?}"
        );
        let out = ReadFileTool.run(json!({"path": "bin"}), &ctx).await;
        assert!(out.is_error && out.content.contains("binary"), "{out:?}");
    }
}
