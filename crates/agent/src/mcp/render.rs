//! A tool call's result as the text the model reads: text content as is, images, audio and
//! binary resources summarized (the tool loop carries text only), the whole capped.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

use crate::tools::{ToolOutput, cap_head_tail};

/// The model's view of `result`, at most about `max_chars` characters (the middle of a longer
/// one is cut, with a note). `isError` results are tool errors.
pub fn render_result(server: &str, result: &CallToolResult, max_chars: usize) -> ToolOutput {
    let mut parts: Vec<String> = result.content.iter().map(render_block).collect();
    // A server may answer with structured content only (its text block is optional then).
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let mut text = parts.join("\n");
    if text.is_empty() {
        text = "(no output)".into();
    }
    let text = cap_head_tail(&text, max_chars);
    if result.is_error.unwrap_or(false) {
        ToolOutput::error(format!(
            "the MCP server `{server}` reported an error:\n{text}"
        ))
    } else {
        ToolOutput::ok(text)
    }
}

fn render_block(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!(
            "[image: {}, {} bytes, not shown]",
            i.mime_type,
            base64_len(&i.data)
        ),
        ContentBlock::Audio(a) => format!(
            "[audio: {}, {} bytes, not shown]",
            a.mime_type,
            base64_len(&a.data)
        ),
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}: {}, {} bytes, not shown]",
                mime_type.as_deref().unwrap_or("binary"),
                base64_len(blob)
            ),
            _ => "[a resource of a kind this agent does not read]".into(),
        },
        ContentBlock::ResourceLink(link) => {
            format!("[resource link: {} ({})]", link.uri, link.name)
        }
        _ => "[content of a kind this agent does not read]".into(),
    }
}

/// Decoded size of base64 `data`, without decoding it.
fn base64_len(data: &str) -> usize {
    let trimmed = data.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(value: serde_json::Value) -> CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn text_is_kept_binary_is_summarized_and_errors_are_errors() {
        let r = result(json!({
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
                {"type": "resource_link", "uri": "file:///b", "name": "b"}
            ]
        }));
        let out = render_result("s", &r, 1000);
        assert!(!out.is_error);
        assert_eq!(
            out.content,
            "hello\n[image: image/png, 5 bytes, not shown]\n[resource file:///a.txt]\ninside\n[resource link: file:///b (b)]"
        );

        let r = result(json!({"content": [{"type": "text", "text": "bad zone"}], "isError": true}));
        let out = render_result("time", &r, 1000);
        assert!(out.is_error);
        assert!(
            out.content.contains("`time` reported an error"),
            "{}",
            out.content
        );
        assert!(out.content.contains("bad zone"));
    }

    #[test]
    fn structured_only_results_and_long_results() {
        let r = result(json!({"content": [], "structuredContent": {"a": 1}}));
        assert_eq!(render_result("s", &r, 1000).content, "{\"a\":1}");
        let r = result(json!({"content": [{"type": "text", "text": "x".repeat(5000)}]}));
        let out = render_result("s", &r, 100);
        assert!(out.content.contains("characters cut"), "{}", out.content);
        assert!(out.content.chars().count() < 200);
    }
}
