//! Model providers behind one trait.
//!
//! Each provider is a thin hand-written client for one wire API. They all speak to the
//! host's model relay (plain HTTP on loopback, bridged to a Unix socket), never to the
//! internet directly, and never hold a key: the relay injects it on the host side.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use nanoclaw_protocol::Usage;

mod anthropic;
mod openai;
mod retry;
mod sse;

pub use anthropic::AnthropicProvider;
pub use openai::OpenAiProvider;
pub use retry::{DEFAULT_STREAM_IDLE_TIMEOUT, RetryPolicy};

/// Who said a message in the model conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// Provider-neutral content block; each provider maps it to its wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    pub fn assistant_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    /// The text blocks joined, tool blocks left out.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for block in &self.content {
            if let ContentBlock::Text { text } = block {
                out.push_str(text);
            }
        }
        out
    }
}

/// A tool as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's input object.
    pub input_schema: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    pub model: String,
    /// The system prompt. Providers that support prompt caching mark it cacheable: it
    /// (memory files, standing instructions) is the stable prefix of every request.
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    Refusal,
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    /// Assistant content in order: text and tool-use blocks.
    pub content: Vec<ContentBlock>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The API answered with an error status or an error event.
    #[error("{provider} API error {status} ({kind}): {message}")]
    Api {
        provider: &'static str,
        /// HTTP status; 0 for an error event inside a stream.
        status: u16,
        /// The API's error type, e.g. `overloaded_error`, `rate_limit_error`.
        kind: String,
        message: String,
        retryable: bool,
    },
    #[error("{provider}: could not reach the model relay: {message}")]
    Transport {
        provider: &'static str,
        message: String,
    },
    #[error("{provider}: unexpected response: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Api { retryable, .. } => *retryable,
            ProviderError::Transport { .. } => true,
            ProviderError::Protocol { .. } => false,
        }
    }
}

/// One model API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `anthropic`, `openai`.
    fn name(&self) -> &'static str;

    /// Sends one request and streams the answer. `on_text` receives text as it arrives.
    /// Retries (429, 5xx, overload) happen inside, following the provider's policy; after
    /// a retry `on_text` receives the new attempt's text from its start, and the returned
    /// `ModelResponse` (the final attempt only) is authoritative.
    ///
    /// The `for<'t>` is required: `#[async_trait]` would otherwise give the `&str` of an
    /// elided `FnMut(&str)` a fixed lifetime parameter of the method, and the callback
    /// could not be called with text the provider just received. Implementations must
    /// write the parameter exactly like this.
    async fn complete(
        &self,
        request: &ModelRequest,
        on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
    ) -> Result<ModelResponse, ProviderError>;
}

type ProviderFactory = fn(base_url: &str, retry: RetryPolicy) -> Box<dyn Provider>;

/// The registered providers, by the name groups use in their configuration.
const PROVIDERS: &[(&str, ProviderFactory)] = &[
    ("anthropic", |base, retry| {
        Box::new(AnthropicProvider::new(base, retry))
    }),
    ("openai", |base, retry| {
        Box::new(OpenAiProvider::new(base, retry))
    }),
];

/// Names of all registered providers.
pub fn provider_names() -> impl Iterator<Item = &'static str> {
    PROVIDERS.iter().map(|(name, _)| *name)
}

/// Builds the provider called `name`, talking to the relay at `relay_base_url`
/// (e.g. `http://127.0.0.1:PORT`); each provider appends its own path prefix
/// (`/anthropic`, `/openai`).
pub fn provider_for(
    name: &str,
    relay_base_url: &str,
    retry: RetryPolicy,
) -> Option<Box<dyn Provider>> {
    PROVIDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make(relay_base_url, retry))
}
