//! Compaction: when the prompt nears the context window, the older part of the history
//! is replaced by a model-written summary. The system prompt (memory, instructions) is
//! not part of the history, so it is never summarized away.

use crate::format::truncate_chars;
use crate::provider::{
    ContentBlock, Message, ModelRequest, Provider, ProviderError, Role, ToolSpec, Usage,
};

/// Compaction starts when the prompt exceeds this share of the context window.
pub const THRESHOLD_PERCENT: u64 = 75;
/// How many of the newest exchanges (user turns with everything after them) stay verbatim.
pub const KEEP_EXCHANGES: usize = 2;
/// Marker at the start of the summarization system prompt (scripted tests match it).
pub const SUMMARY_SYSTEM_PROMPT: &str = "You are compacting a conversation between a user and \
    an AI assistant so it can continue in a smaller context. Write a concise but complete \
    summary of the transcript you are given: who said what that still matters, decisions \
    made, facts learned, files created or changed, tasks still open, and anything the \
    assistant promised to do. Write it as notes to the assistant, in the language of the \
    conversation. Output only the summary.";
/// Longest tool result kept in the transcript given to the summarizer.
const TRANSCRIPT_TOOL_RESULT_CHARS: usize = 2_000;

/// Whether a prompt of `estimated_tokens` is too big for `context_window`.
pub fn needs_compaction(estimated_tokens: u64, context_window: u32) -> bool {
    estimated_tokens * 100 > u64::from(context_window) * THRESHOLD_PERCENT
}

/// Rough token count of text (4 characters per token).
pub fn estimate_text_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn message_chars(m: &Message) -> usize {
    m.content
        .iter()
        .map(|b| match b {
            ContentBlock::Text { text } => text.len(),
            ContentBlock::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
            ContentBlock::ToolResult { content, .. } => content.len(),
        })
        .sum()
}

/// Estimated prompt tokens: the larger of what the API last reported and a chars/4
/// estimate of everything that will be sent.
pub fn estimate_prompt_tokens(
    last_input_tokens: Option<u64>,
    system: &str,
    messages: &[Message],
    tools: &[ToolSpec],
) -> u64 {
    let chars = system.len()
        + messages.iter().map(message_chars).sum::<usize>()
        + tools
            .iter()
            .map(|t| t.description.len() + t.input_schema.to_string().len())
            .sum::<usize>();
    estimate_text_tokens(chars).max(last_input_tokens.unwrap_or(0))
}

fn has_tool_result(m: &Message) -> bool {
    m.content
        .iter()
        .any(|b| matches!(b, ContentBlock::ToolResult { .. }))
}

/// Indices where the history may be cut without separating a tool use from its result:
/// an assistant message, or a user message that carries no tool results.
fn is_cut_point(messages: &[Message], i: usize) -> bool {
    match messages[i].role {
        Role::Assistant => true,
        Role::User => !has_tool_result(&messages[i]),
    }
}

/// Where to split `messages` into (older → summarized, newer → kept verbatim): the start
/// of the `keep_exchanges`-th newest user turn; when that keeps too much (more than
/// `max_kept_tokens`, e.g. one long tool loop), the next later safe cut. `None` when
/// nothing can be summarized.
pub fn split_point(
    messages: &[Message],
    keep_exchanges: usize,
    max_kept_tokens: u64,
) -> Option<usize> {
    let cuts: Vec<usize> = (1..messages.len())
        .filter(|&i| is_cut_point(messages, i))
        .collect();
    let turn_starts: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].role == Role::User && !has_tool_result(&messages[i]))
        .collect();
    let preferred = turn_starts
        .len()
        .checked_sub(keep_exchanges.max(1))
        .map(|k| turn_starts[k])
        .unwrap_or(0);
    let kept_tokens =
        |from: usize| estimate_text_tokens(messages[from..].iter().map(message_chars).sum());
    let mut candidates = cuts.into_iter().filter(|&c| c >= preferred);
    let first = candidates.next()?;
    if kept_tokens(first) <= max_kept_tokens {
        return Some(first);
    }
    let mut last = first;
    for c in candidates {
        last = c;
        if kept_tokens(c) <= max_kept_tokens {
            return Some(c);
        }
    }
    Some(last)
}

/// Renders messages as a plain transcript for the summarizer.
pub fn transcript(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let who = match m.role {
            Role::User => "USER",
            Role::Assistant => "ASSISTANT",
        };
        for block in &m.content {
            match block {
                ContentBlock::Text { text } => out.push_str(&format!("[{who}]\n{text}\n\n")),
                ContentBlock::ToolUse { name, input, .. } => {
                    out.push_str(&format!("[ASSISTANT called tool {name}] {input}\n\n"));
                }
                ContentBlock::ToolResult {
                    content, is_error, ..
                } => {
                    let kind = if *is_error {
                        "tool error"
                    } else {
                        "tool result"
                    };
                    out.push_str(&format!(
                        "[{kind}]\n{}\n\n",
                        truncate_chars(content, TRANSCRIPT_TOOL_RESULT_CHARS)
                    ));
                }
            }
        }
    }
    out
}

/// The result of a compaction.
pub struct Compacted {
    pub messages: Vec<Message>,
    pub summarized: usize,
    pub usage: Usage,
}

/// Summarizes the older part of `messages` with `provider`. `Ok(None)` when there is
/// nothing to summarize.
pub async fn compact(
    provider: &dyn Provider,
    model: &str,
    max_tokens: u32,
    context_window: u32,
    messages: &[Message],
) -> Result<Option<Compacted>, ProviderError> {
    let max_kept = u64::from(context_window) / 4;
    let Some(split) = split_point(messages, KEEP_EXCHANGES, max_kept) else {
        return Ok(None);
    };
    let (older, newer) = messages.split_at(split);
    // The transcript must itself fit: keep its head and tail within ~half the window.
    let max_chars = (context_window as usize).saturating_mul(2);
    let text = crate::tools::cap_head_tail(&transcript(older), max_chars);
    let request = ModelRequest {
        model: model.to_owned(),
        system: SUMMARY_SYSTEM_PROMPT.to_owned(),
        messages: vec![Message::user_text(format!(
            "<transcript>\n{text}</transcript>\n\nSummarize this conversation as instructed."
        ))],
        tools: Vec::new(),
        max_tokens,
    };
    let response = provider.complete(&request, &mut |_| {}).await?;
    let summary: String = response
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let mut out = vec![Message::user_text(format!(
        "<conversation_summary>\n{}\n</conversation_summary>",
        summary.trim()
    ))];
    if newer.first().is_some_and(|m| m.role == Role::User) {
        out.push(Message::assistant_text(
            "Understood. I have the summary of our earlier conversation and will continue from it.",
        ));
    }
    out.extend_from_slice(newer);
    Ok(Some(Compacted {
        messages: out,
        summarized: older.len(),
        usage: response.usage,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ModelResponse, StopReason};
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::Mutex;

    fn tool_use(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: id.into(),
                name: "bash".into(),
                input: json!({"command": "ls"}),
            }],
        }
    }
    fn tool_result(id: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.into(),
                content: "x".repeat(400),
                is_error: false,
            }],
        }
    }

    fn history() -> Vec<Message> {
        vec![
            Message::user_text("first"),
            tool_use("a"),
            tool_result("a"),
            Message::assistant_text("done 1"),
            Message::user_text("second"),
            Message::assistant_text("done 2"),
            Message::user_text("third"),
            tool_use("b"),
            tool_result("b"),
            tool_use("c"),
            tool_result("c"),
        ]
    }

    #[test]
    fn threshold_is_three_quarters_of_the_window() {
        assert!(!needs_compaction(7_500, 10_000));
        assert!(needs_compaction(7_501, 10_000));
        assert!(!needs_compaction(0, 0));
        assert_eq!(estimate_prompt_tokens(Some(9_000), "abcd", &[], &[]), 9_000);
        assert_eq!(
            estimate_prompt_tokens(None, &"x".repeat(400), &[], &[]),
            100
        );
    }

    #[test]
    fn split_keeps_recent_exchanges_and_never_separates_tool_pairs() {
        let h = history();
        // Plenty of room: keep the last two user turns ("second" onward).
        assert_eq!(split_point(&h, 2, 10_000), Some(4));
        // Too little room: move later, but only to safe cut points.
        let tight = split_point(&h, 2, 150).unwrap();
        assert!(is_cut_point(&h, tight));
        assert!(!has_tool_result(&h[tight]));
        assert_eq!(tight, 9, "the last safe cut before the final tool result");
        // Nothing older than one turn: nothing to summarize by exchange, but the cut
        // may still fall inside a long turn.
        let one = vec![Message::user_text("only")];
        assert_eq!(split_point(&one, 2, 10), None);
    }

    struct Summarizer(Mutex<Vec<ModelRequest>>);
    #[async_trait]
    impl Provider for Summarizer {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn complete(
            &self,
            request: &ModelRequest,
            _on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
        ) -> Result<ModelResponse, ProviderError> {
            self.0.lock().unwrap().push(request.clone());
            Ok(ModelResponse {
                content: vec![ContentBlock::Text {
                    text: "SUMMARY".into(),
                }],
                stop_reason: StopReason::EndTurn,
                usage: Usage::default(),
            })
        }
    }

    #[tokio::test]
    async fn compaction_replaces_older_messages_with_a_summary() {
        let fake = Summarizer(Mutex::new(Vec::new()));
        let h = history();
        let done = compact(&fake, "m", 500, 100_000, &h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.summarized, 4);
        assert_eq!(
            done.messages[0].text(),
            "<conversation_summary>\nSUMMARY\n</conversation_summary>"
        );
        assert_eq!(done.messages[1].role, Role::Assistant);
        assert_eq!(&done.messages[2..], &h[4..]);
        let reqs = fake.0.lock().unwrap();
        assert!(
            reqs[0]
                .system
                .starts_with("You are compacting a conversation")
        );
        assert!(reqs[0].tools.is_empty());
        let sent = reqs[0].messages[0].text();
        assert!(sent.contains("first") && sent.contains("done 1") && !sent.contains("second"));
    }
}
