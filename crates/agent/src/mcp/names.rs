//! Tool names the model providers accept: `[a-zA-Z0-9_-]`, at most 64 characters.

/// Longest tool name the providers accept.
pub const MAX_TOOL_NAME: usize = 64;

/// `name` with every character outside `[a-zA-Z0-9_-]` replaced by `_`.
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The model-facing name of tool `tool` of `owner` (an MCP server or a skill):
/// `<owner>__<tool>`, sanitized and cut to [`MAX_TOOL_NAME`] characters. Two tools may end
/// up with the same name; the registry refuses the second.
pub fn tool_name(owner: &str, tool: &str) -> String {
    let full = sanitize_name(&format!("{owner}__{tool}"));
    full.chars().take(MAX_TOOL_NAME).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced_sanitized_and_capped() {
        assert_eq!(
            tool_name("time", "get_current_time"),
            "time__get_current_time"
        );
        assert_eq!(tool_name("my server", "do.it/now"), "my_server__do_it_now");
        assert_eq!(tool_name("ünï", "x"), "_n___x");
        let long = tool_name("s", &"a".repeat(100));
        assert_eq!(long.len(), MAX_TOOL_NAME);
        assert!(long.starts_with("s__aaa"));
    }
}
