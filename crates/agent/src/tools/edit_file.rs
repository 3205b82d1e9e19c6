//! `edit_file`: exact string replacement in a text file.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, blocking, parse_input, str_field};
use crate::provider::ToolSpec;

pub struct EditFileTool;

#[derive(Deserialize)]
struct Input {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

#[async_trait]
impl Tool for EditFileTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "edit_file".into(),
            description: "Replace an exact string in a file. old_string must occur exactly once \
                          (include surrounding lines to make it unique) unless replace_all is \
                          true. Relative paths are taken from the workspace."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "old_string": {"type": "string", "description": "Exact text to replace."},
                    "new_string": {"type": "string", "description": "Replacement text."},
                    "replace_all": {"type": "boolean", "default": false}
                },
                "required": ["path", "old_string", "new_string"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        str_field(input, "path").to_owned()
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("edit_file", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let path = ctx.resolve(&input.path);
        let shown = ctx.display(&path);
        blocking(move || edit(&path, &shown, &input)).await
    }
}

fn edit(path: &std::path::Path, shown: &str, input: &Input) -> ToolOutput {
    if input.old_string.is_empty() {
        return ToolOutput::error(
            "old_string is empty; to create a file use write_file, otherwise give the exact text to replace",
        );
    }
    if input.old_string == input.new_string {
        return ToolOutput::error("old_string and new_string are the same; nothing to change");
    }
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return ToolOutput::error(format!(
                    "{shown} is not UTF-8 text; it cannot be edited"
                ));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ToolOutput::error(format!("file not found: {shown}"));
        }
        Err(e) => return ToolOutput::error(format!("cannot read {shown}: {e}")),
    };
    let count = text.matches(&input.old_string).count();
    if count == 0 {
        return ToolOutput::error(format!(
            "old_string was not found in {shown}; read the file and copy the text exactly (including whitespace)"
        ));
    }
    if count > 1 && !input.replace_all {
        return ToolOutput::error(format!(
            "old_string occurs {count} times in {shown}; include more surrounding text to make it unique, or set replace_all to true"
        ));
    }
    let updated = if input.replace_all {
        text.replace(&input.old_string, &input.new_string)
    } else {
        text.replacen(&input.old_string, &input.new_string, 1)
    };
    match std::fs::write(path, updated) {
        Ok(()) => ToolOutput::ok(format!(
            "replaced {count} occurrence{} in {shown}",
            if count == 1 { "" } else { "s" }
        )),
        Err(e) => ToolOutput::error(format!("cannot write {shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn ambiguous_edit_is_refused_unless_replace_all() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "a x a x a").unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = EditFileTool
            .run(
                json!({"path": "f.txt", "old_string": "a", "new_string": "b"}),
                &ctx,
            )
            .await;
        assert!(out.is_error);
        assert!(out.content.contains("occurs 3 times"), "{}", out.content);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a x a x a");

        let out = EditFileTool
            .run(
                json!({"path": "f.txt", "old_string": "a", "new_string": "b", "replace_all": true}),
                &ctx,
            )
            .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "b x b x b");
    }

    #[tokio::test]
    async fn unique_edit_applies_and_missing_text_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "hello world").unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = EditFileTool
            .run(
                json!({"path": "f.txt", "old_string": "world", "new_string": "there"}),
                &ctx,
            )
            .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello there");
        let out = EditFileTool
            .run(
                json!({"path": "f.txt", "old_string": "world", "new_string": "x"}),
                &ctx,
            )
            .await;
        assert!(out.is_error && out.content.contains("not found"), "{out:?}");
    }
}
