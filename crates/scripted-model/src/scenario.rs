//! Scenarios: ordered rules that decide what the scripted model answers.
//!
//! Both wire formats are first converted into a neutral [`Conversation`], so one
//! scenario drives the Anthropic and the OpenAI endpoint alike.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the scripted model answers. The first rule whose matcher matches wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// When set, requests must carry exactly this key (`x-api-key` for Anthropic,
    /// `Authorization: Bearer` for OpenAI); otherwise any key, or none, is accepted.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub when: Matcher,
    pub reply: Reply,
}

/// A condition on the conversation received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    Always,
    /// The newest plain user text (tool results do not count) contains this.
    LastUserTextContains(String),
    /// The newest conversation item is a tool result.
    LastIsToolResult,
    /// The system prompt contains this.
    SystemContains(String),
    /// At least this many tool results arrived since the newest plain user text.
    ToolResultCountAtLeast(usize),
    /// Every inner matcher matches.
    All(Vec<Matcher>),
    /// The inner matcher does not match.
    Not(Box<Matcher>),
}

/// What to answer. Text comes first, then the tool calls. Strings may use the
/// templates `{{last_user_text}}` and `{{last_tool_result}}`, also inside tool inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// The tool's input object.
    pub input: Value,
}

/// The answer when no rule matches, so a test failure says why.
pub const NO_RULE_MATCHED: &str = "scripted model: no rule matched";

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires this API key on every request.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Appends a rule (rules are tried in order).
    pub fn rule(mut self, when: Matcher, reply: Reply) -> Self {
        self.rules.push(Rule { when, reply });
        self
    }

    /// Replies `echo: <the user's text>` to everything.
    pub fn echo() -> Self {
        Self::new().rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"))
    }

    /// The offline demo: on a user message, run `uname -sr` through the `bash` tool,
    /// then report what it printed.
    pub fn demo_uname() -> Self {
        Self::new()
            .rule(
                Matcher::LastIsToolResult,
                Reply::text("I ran `uname -sr` in my sandbox. It printed: {{last_tool_result}}"),
            )
            .rule(
                Matcher::Always,
                Reply::text("Let me check which kernel my sandbox runs.")
                    .with_tool_call("bash", serde_json::json!({"command": "uname -sr"})),
            )
    }

    /// The reply for a conversation: the first matching rule's, templates filled in.
    pub(crate) fn plan(&self, conv: &Conversation) -> Planned {
        let Some(rule) = self.rules.iter().find(|r| r.when.matches(conv)) else {
            return Planned {
                text: Some(NO_RULE_MATCHED.to_string()),
                tool_calls: Vec::new(),
            };
        };
        Planned {
            text: rule
                .reply
                .text
                .as_deref()
                .map(|t| conv.fill(t))
                .filter(|t| !t.is_empty()),
            tool_calls: rule
                .reply
                .tool_calls
                .iter()
                .map(|c| (c.name.clone(), conv.fill_value(&c.input)))
                .collect(),
        }
    }
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            tool_calls: Vec::new(),
        }
    }

    pub fn tool_call(name: impl Into<String>, input: Value) -> Self {
        Self::default().with_tool_call(name, input)
    }

    pub fn with_tool_call(mut self, name: impl Into<String>, input: Value) -> Self {
        self.tool_calls.push(ToolCall {
            name: name.into(),
            input,
        });
        self
    }
}

impl Matcher {
    pub fn last_user_text_contains(s: impl Into<String>) -> Self {
        Self::LastUserTextContains(s.into())
    }

    pub fn system_contains(s: impl Into<String>) -> Self {
        Self::SystemContains(s.into())
    }

    pub(crate) fn matches(&self, conv: &Conversation) -> bool {
        match self {
            Matcher::Always => true,
            Matcher::LastUserTextContains(s) => conv
                .last_user_text()
                .is_some_and(|t| t.contains(s.as_str())),
            Matcher::LastIsToolResult => matches!(conv.turns.last(), Some(Turn::ToolResult(_))),
            Matcher::SystemContains(s) => conv.system.contains(s.as_str()),
            Matcher::ToolResultCountAtLeast(n) => conv.tool_results_since_user_text() >= *n,
            Matcher::All(all) => all.iter().all(|m| m.matches(conv)),
            Matcher::Not(inner) => !inner.matches(conv),
        }
    }
}

/// One item of the conversation, in the order received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Turn {
    UserText(String),
    ToolResult(String),
    Assistant,
}

/// A request reduced to what the rules look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Conversation {
    pub system: String,
    pub turns: Vec<Turn>,
}

impl Conversation {
    fn last_user_text(&self) -> Option<&str> {
        self.turns.iter().rev().find_map(|t| match t {
            Turn::UserText(s) => Some(s.as_str()),
            _ => None,
        })
    }

    fn last_tool_result(&self) -> Option<&str> {
        self.turns.iter().rev().find_map(|t| match t {
            Turn::ToolResult(s) => Some(s.as_str()),
            _ => None,
        })
    }

    fn tool_results_since_user_text(&self) -> usize {
        self.turns
            .iter()
            .rev()
            .take_while(|t| !matches!(t, Turn::UserText(_)))
            .filter(|t| matches!(t, Turn::ToolResult(_)))
            .count()
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace(
                "{{last_tool_result}}",
                self.last_tool_result().unwrap_or("").trim_end(),
            )
            .replace("{{last_user_text}}", self.last_user_text().unwrap_or(""))
    }

    fn fill_value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.fill(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.fill_value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.fill_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A reply with its templates filled in, before it is put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub text: Option<String>,
    pub tool_calls: Vec<(String, Value)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(turns: Vec<Turn>) -> Conversation {
        Conversation {
            system: "You are Andy.".into(),
            turns,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_templates_fill() {
        let s = Scenario::new()
            .rule(
                Matcher::last_user_text_contains("weather"),
                Reply::text("sunny for {{last_user_text}}"),
            )
            .rule(Matcher::Always, Reply::text("fallback"));
        let p = s.plan(&conv(vec![Turn::UserText("weather in Oslo".into())]));
        assert_eq!(p.text.as_deref(), Some("sunny for weather in Oslo"));
        let p = s.plan(&conv(vec![Turn::UserText("hello".into())]));
        assert_eq!(p.text.as_deref(), Some("fallback"));
    }

    #[test]
    fn last_user_text_ignores_tool_results() {
        let c = conv(vec![
            Turn::UserText("first".into()),
            Turn::Assistant,
            Turn::ToolResult("weather data".into()),
        ]);
        assert!(!Matcher::last_user_text_contains("weather").matches(&c));
        assert!(Matcher::last_user_text_contains("first").matches(&c));
        assert!(Matcher::LastIsToolResult.matches(&c));
    }

    #[test]
    fn tool_result_count_counts_since_last_user_text() {
        let c = conv(vec![
            Turn::ToolResult("old".into()),
            Turn::UserText("go".into()),
            Turn::Assistant,
            Turn::ToolResult("a".into()),
            Turn::Assistant,
            Turn::ToolResult("b".into()),
        ]);
        assert!(Matcher::ToolResultCountAtLeast(2).matches(&c));
        assert!(!Matcher::ToolResultCountAtLeast(3).matches(&c));
    }

    #[test]
    fn system_and_combinators() {
        let c = conv(vec![Turn::UserText("hi".into())]);
        assert!(Matcher::system_contains("Andy").matches(&c));
        assert!(!Matcher::Not(Box::new(Matcher::system_contains("Andy"))).matches(&c));
        assert!(!Matcher::All(vec![Matcher::Always, Matcher::LastIsToolResult]).matches(&c));
    }

    #[test]
    fn no_match_says_so() {
        let p = Scenario::new().plan(&conv(vec![Turn::UserText("hi".into())]));
        assert_eq!(p.text.as_deref(), Some(NO_RULE_MATCHED));
        assert!(p.tool_calls.is_empty());
    }

    #[test]
    fn demo_calls_bash_then_reports_result() {
        let s = Scenario::demo_uname();
        let p = s.plan(&conv(vec![Turn::UserText("what kernel?".into())]));
        assert_eq!(
            p.tool_calls,
            vec![("bash".to_string(), json!({"command": "uname -sr"}))]
        );
        let p = s.plan(&conv(vec![
            Turn::UserText("what kernel?".into()),
            Turn::Assistant,
            Turn::ToolResult("Linux 6.1.0\n".into()),
        ]));
        assert_eq!(
            p.text.as_deref(),
            Some("I ran `uname -sr` in my sandbox. It printed: Linux 6.1.0")
        );
        assert!(p.tool_calls.is_empty());
    }

    #[test]
    fn tool_input_strings_are_templated() {
        let s = Scenario::new().rule(
            Matcher::Always,
            Reply::tool_call(
                "write",
                json!({"path": "x", "body": ["{{last_user_text}}", 3]}),
            ),
        );
        let p = s.plan(&conv(vec![Turn::UserText("hey".into())]));
        assert_eq!(p.tool_calls[0].1, json!({"path": "x", "body": ["hey", 3]}));
    }

    #[test]
    fn scenario_round_trips_through_json() {
        let text = r#"{
            "api_key": "k",
            "rules": [
                {"when": {"last_user_text_contains": "hi"}, "reply": {"text": "hello"}},
                {"when": "last_is_tool_result", "reply": {"text": "done"}},
                {"when": "always", "reply": {"tool_calls": [{"name": "bash", "input": {"command": "ls"}}]}}
            ]
        }"#;
        let s: Scenario = serde_json::from_str(text).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("k"));
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[1].when, Matcher::LastIsToolResult);
        let back: Scenario = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
