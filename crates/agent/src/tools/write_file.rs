//! `write_file`: creates or overwrites a file.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, blocking, parse_input, str_field};
use crate::provider::ToolSpec;

pub struct WriteFileTool;

#[derive(Deserialize)]
struct Input {
    path: String,
    content: String,
}

#[async_trait]
impl Tool for WriteFileTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write_file".into(),
            description: "Create or overwrite a file with the given content; parent \
                          directories are created. Relative paths are taken from the workspace."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"}
                },
                "required": ["path", "content"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        str_field(input, "path").to_owned()
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("write_file", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let path = ctx.resolve(&input.path);
        let shown = ctx.display(&path);
        blocking(move || {
            if path.is_dir() {
                return ToolOutput::error(format!("{shown} is a directory; give a file path"));
            }
            if let Some(parent) = path.parent()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                return ToolOutput::error(format!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ));
            }
            match std::fs::write(&path, input.content.as_bytes()) {
                Ok(()) => ToolOutput::ok(format!("wrote {} bytes to {shown}", input.content.len())),
                Err(e) => ToolOutput::error(format!("cannot write {shown}: {e}")),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn creates_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = WriteFileTool
            .run(json!({"path": "a/b/c.txt", "content": "hello"}), &ctx)
            .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(out.content, "wrote 5 bytes to a/b/c.txt");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b/c.txt")).unwrap(),
            "hello"
        );
    }
}
