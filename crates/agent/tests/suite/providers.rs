//! The model providers against the scripted model server (real HTTP, documented wire
//! formats), plus a few canned raw streams for server quirks the scripted model does not
//! produce.

use std::time::{Duration, Instant};

use nanoclaw_agent::provider::{
    AnthropicProvider, ContentBlock, Message, ModelRequest, ModelResponse, OpenAiProvider,
    Provider, ProviderError, RetryPolicy, Role, StopReason, ToolSpec, provider_for, provider_names,
};
use nanoclaw_scripted_model::{Fault, Scenario, ScriptedModel};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn request(text: &str) -> ModelRequest {
    ModelRequest {
        model: "test-model".into(),
        system: "You are Andy, a helpful assistant.".into(),
        messages: vec![Message::user_text(text)],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "Run a shell command".into(),
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}},
                                 "required": ["command"]}),
        }],
        max_tokens: 1024,
    }
}

/// Runs a request, collecting every piece given to `on_text`.
async fn complete(
    provider: &dyn Provider,
    req: &ModelRequest,
) -> (Result<ModelResponse, ProviderError>, Vec<String>) {
    let mut pieces = Vec::new();
    let result = provider
        .complete(req, &mut |t: &str| pieces.push(t.to_string()))
        .await;
    (result, pieces)
}

fn text_of(resp: &ModelResponse) -> String {
    Message {
        role: Role::Assistant,
        content: resp.content.clone(),
    }
    .text()
}

fn anthropic(model: &ScriptedModel) -> AnthropicProvider {
    AnthropicProvider::new(&model.base_url(), RetryPolicy::immediate())
}

fn openai(model: &ScriptedModel) -> OpenAiProvider {
    OpenAiProvider::new(&model.base_url(), RetryPolicy::immediate())
}

/// The tool call in a response, asserting there is exactly one.
fn only_tool_use(resp: &ModelResponse) -> (String, String, Value) {
    let uses: Vec<_> = resp
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolUse { id, name, input } => {
                Some((id.clone(), name.clone(), input.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(uses.len(), 1, "{:?}", resp.content);
    uses.into_iter().next().unwrap()
}

/// Continues `req` with the assistant's tool call and its result.
fn with_tool_result(mut req: ModelRequest, resp: &ModelResponse, result: &str) -> ModelRequest {
    let (id, _, _) = only_tool_use(resp);
    req.messages.push(Message {
        role: Role::Assistant,
        content: resp.content.clone(),
    });
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::ToolResult {
            tool_use_id: id,
            content: result.into(),
            is_error: false,
        }],
    });
    req
}

#[tokio::test]
async fn anthropic_streams_text_in_pieces_and_sends_documented_request() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let (result, pieces) = complete(&anthropic(&model), &request("hello there my friend")).await;
    let resp = result.unwrap();
    assert_eq!(text_of(&resp), "echo: hello there my friend");
    assert!(pieces.len() > 1, "text streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), "echo: hello there my friend");
    assert_eq!(resp.stop_reason, StopReason::EndTurn);
    assert!(resp.usage.input_tokens > 0 && resp.usage.output_tokens > 0);

    let reqs = model.requests();
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    assert_eq!(sent.path, "/anthropic/v1/messages");
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        sent.header("x-api-key").is_none(),
        "the relay injects the key"
    );
    assert!(
        sent.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(sent.body["stream"], true);
    assert_eq!(
        sent.body["system"][0]["text"],
        "You are Andy, a helpful assistant."
    );
    assert_eq!(sent.body["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(
        sent.body["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert_eq!(sent.body["tools"][0]["name"], "bash");
}

#[tokio::test]
async fn anthropic_tool_use_round_trip_with_split_json() {
    let model = ScriptedModel::start(Scenario::demo_uname()).await.unwrap();
    let provider = anthropic(&model);
    let req = request("which kernel are you on?");
    let (result, pieces) = complete(&provider, &req).await;
    let first = result.unwrap();
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    let (id, name, input) = only_tool_use(&first);
    assert!(id.starts_with("toolu_"));
    assert_eq!(name, "bash");
    assert_eq!(input, json!({"command": "uname -sr"}));
    assert_eq!(
        pieces.concat(),
        "Let me check which kernel my sandbox runs."
    );
    // Text comes before the tool call, as streamed.
    assert!(matches!(first.content[0], ContentBlock::Text { .. }));

    let req = with_tool_result(req, &first, "Linux 6.1.0-test\n");
    let (result, _) = complete(&provider, &req).await;
    let second = result.unwrap();
    assert_eq!(second.stop_reason, StopReason::EndTurn);
    assert_eq!(
        text_of(&second),
        "I ran `uname -sr` in my sandbox. It printed: Linux 6.1.0-test"
    );
    // The server validated tool_use/tool_result pairing; check the mapping too.
    let sent = &model.requests()[1].body;
    let result_block = &sent["messages"][2]["content"][0];
    assert_eq!(result_block["type"], "tool_result");
    assert_eq!(result_block["tool_use_id"], json!(id));
    assert_eq!(result_block["cache_control"]["type"], "ephemeral");
    assert_eq!(
        sent["messages"][1]["content"][1]["input"],
        json!({"command": "uname -sr"})
    );
}

#[tokio::test]
async fn anthropic_reports_prompt_cache_reads_on_the_next_turn() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let provider = anthropic(&model);
    let mut req = request("first");
    req.system = "Standing instructions. ".repeat(100);
    let first = complete(&provider, &req).await.0.unwrap();
    assert_eq!(first.usage.cache_read_input_tokens, 0);
    assert!(first.usage.cache_creation_input_tokens > 0);
    req.messages.push(Message::assistant_text(text_of(&first)));
    req.messages.push(Message::user_text("second"));
    let second = complete(&provider, &req).await.0.unwrap();
    assert!(
        second.usage.cache_read_input_tokens > first.usage.cache_creation_input_tokens / 2,
        "{:?}",
        second.usage
    );
}

#[tokio::test]
async fn anthropic_retries_overload_then_succeeds() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::overloaded());
    model.push_fault(Fault::status(500, "api_error", "Internal server error"));
    let (result, _) = complete(&anthropic(&model), &request("hi")).await;
    assert_eq!(text_of(&result.unwrap()), "echo: hi");
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test]
async fn anthropic_gives_up_after_max_retries_with_the_api_error() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    for _ in 0..5 {
        model.push_fault(Fault::overloaded());
    }
    let policy = RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::immediate()
    };
    let provider = AnthropicProvider::new(&model.base_url(), policy);
    let err = complete(&provider, &request("hi")).await.0.unwrap_err();
    assert_eq!(model.requests().len(), 3, "one try plus two retries");
    match &err {
        ProviderError::Api { status, kind, .. } => {
            assert_eq!(*status, 529);
            assert_eq!(kind, "overloaded_error");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn anthropic_honours_retry_after() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::rate_limited(1));
    // No backoff of its own: any wait comes from retry-after.
    let policy = RetryPolicy {
        max_retries: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let provider = AnthropicProvider::new(&model.base_url(), policy);
    let started = Instant::now();
    let (result, _) = complete(&provider, &request("hi")).await;
    assert_eq!(text_of(&result.unwrap()), "echo: hi");
    // A lower bound only: sleeping never ends early, so this cannot flake.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(model.requests().len(), 2);
}

#[test]
fn retry_policy_backoff_grows_is_capped_and_prefers_retry_after() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_retries, 4);
    assert_eq!(
        policy.backoff(0, Some(Duration::from_secs(7))),
        Duration::from_secs(7)
    );
    assert_eq!(
        policy.backoff(0, Some(Duration::from_secs(600))),
        policy.max_delay,
        "retry-after is capped"
    );
    for retry in 0..3 {
        let full = Duration::from_secs(1 << retry);
        let d = policy.backoff(retry, None);
        assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
    }
    assert!(policy.backoff(20, None) <= policy.max_delay);
    assert_eq!(RetryPolicy::immediate().backoff(3, None), Duration::ZERO);
}

#[tokio::test]
async fn anthropic_does_not_retry_auth_or_bad_request() {
    let model = ScriptedModel::start(Scenario::echo().with_api_key("sk-needed"))
        .await
        .unwrap();
    let err = complete(&anthropic(&model), &request("hi"))
        .await
        .0
        .unwrap_err();
    assert_eq!(model.requests().len(), 1, "401 is not retried");
    assert!(!err.is_retryable());
    let shown = err.to_string();
    assert!(shown.contains("401"), "{shown}");
    assert!(shown.contains("authentication_error"), "{shown}");
    assert!(shown.contains("x-api-key"), "{shown}");

    model.set_scenario(Scenario::echo());
    model.push_fault(Fault::status(
        400,
        "invalid_request_error",
        "prompt is too long",
    ));
    let err = complete(&anthropic(&model), &request("hi"))
        .await
        .0
        .unwrap_err();
    assert_eq!(model.requests().len(), 2, "400 is not retried");
    assert!(
        err.to_string()
            .contains("(invalid_request_error): prompt is too long"),
        "{err}"
    );
}

#[tokio::test]
async fn anthropic_retries_a_mid_stream_overload() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::stream_overloaded());
    let (result, pieces) = complete(&anthropic(&model), &request("one two three four")).await;
    let resp = result.unwrap();
    assert_eq!(text_of(&resp), "echo: one two three four");
    assert_eq!(model.requests().len(), 2);
    // Documented behaviour: the broken attempt's text was streamed, then the retry's
    // text from its start; the response holds only the final attempt.
    let all = pieces.concat();
    assert!(all.ends_with("echo: one two three four"), "{all}");
    assert!(all.len() > "echo: one two three four".len(), "{all}");
}

/// A policy that gives up on a silent response after one second (the default is minutes).
fn impatient() -> RetryPolicy {
    RetryPolicy::immediate().with_stream_idle_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn anthropic_retries_a_stream_that_stalls_midway() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    // message_start and the first text pieces arrive, then nothing.
    model.push_fault(Fault::stream_stall(4));
    let provider = AnthropicProvider::new(&model.base_url(), impatient());
    let (result, pieces) = complete(&provider, &request("one two three four")).await;
    assert_eq!(text_of(&result.unwrap()), "echo: one two three four");
    assert_eq!(model.requests().len(), 2, "the stalled attempt was retried");
    assert!(pieces.concat().len() > "echo: one two three four".len());
}

#[tokio::test]
async fn openai_retries_a_stream_that_stalls_midway() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::stream_stall(3));
    let provider = OpenAiProvider::new(&model.base_url(), impatient());
    let (result, _) = complete(&provider, &request("a b c d")).await;
    assert_eq!(text_of(&result.unwrap()), "echo: a b c d");
    assert_eq!(model.requests().len(), 2, "the stalled attempt was retried");
}

#[tokio::test]
async fn a_stream_that_stays_silent_fails_naming_the_idle_timeout() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::stream_stall(1));
    let provider = AnthropicProvider::new(
        &model.base_url(),
        RetryPolicy::none().with_stream_idle_timeout(Duration::from_secs(1)),
    );
    let err = complete(&provider, &request("hi")).await.0.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("stream idle timeout"), "{err}");
}

#[tokio::test]
async fn openai_streams_text_and_usage_with_documented_request() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let (result, pieces) = complete(&openai(&model), &request("hello there my friend")).await;
    let resp = result.unwrap();
    assert_eq!(text_of(&resp), "echo: hello there my friend");
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(resp.stop_reason, StopReason::EndTurn);
    assert!(resp.usage.input_tokens > 0 && resp.usage.output_tokens > 0);

    let sent = &model.requests()[0];
    assert_eq!(sent.path, "/openai/chat/completions");
    assert!(
        sent.header("authorization").is_none(),
        "the relay injects the key"
    );
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(sent.body["max_tokens"], 1024);
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(sent.body["tools"][0]["type"], "function");
    assert_eq!(sent.body["tools"][0]["function"]["name"], "bash");
    assert_eq!(
        sent.body["tools"][0]["function"]["parameters"]["type"],
        "object"
    );
}

#[tokio::test]
async fn openai_tool_calls_split_across_chunks_round_trip() {
    let model = ScriptedModel::start(Scenario::demo_uname()).await.unwrap();
    let provider = openai(&model);
    let req = request("which kernel?");
    let first = complete(&provider, &req).await.0.unwrap();
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    let (id, name, input) = only_tool_use(&first);
    assert!(id.starts_with("call_"));
    assert_eq!(name, "bash");
    assert_eq!(input, json!({"command": "uname -sr"}));

    let req = with_tool_result(req, &first, "Linux 6.1.0-test");
    let second = complete(&provider, &req).await.0.unwrap();
    assert_eq!(
        text_of(&second),
        "I ran `uname -sr` in my sandbox. It printed: Linux 6.1.0-test"
    );
    let sent = &model.requests()[1].body;
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[2]["tool_calls"][0]["id"], json!(id));
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], json!(id));
}

#[tokio::test]
async fn openai_retries_429_and_5xx_but_not_401() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::status(429, "requests", "Rate limit reached"));
    model.push_fault(Fault::status(
        503,
        "server_error",
        "The server is overloaded",
    ));
    let resp = complete(&openai(&model), &request("hi")).await.0.unwrap();
    assert_eq!(text_of(&resp), "echo: hi");
    assert_eq!(model.requests().len(), 3);

    model.set_scenario(Scenario::echo().with_api_key("sk-needed"));
    let err = complete(&openai(&model), &request("hi"))
        .await
        .0
        .unwrap_err();
    assert_eq!(model.requests().len(), 4, "401 is not retried");
    assert!(
        err.to_string().contains("You didn't provide an API key"),
        "{err}"
    );
}

#[tokio::test]
async fn openai_retries_a_mid_stream_error() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::StreamError {
        kind: "server_error".into(),
        message: "The server had an error".into(),
    });
    let resp = complete(&openai(&model), &request("a b c d"))
        .await
        .0
        .unwrap();
    assert_eq!(text_of(&resp), "echo: a b c d");
    assert_eq!(model.requests().len(), 2);
}

/// Serves one canned HTTP response on a fresh port and returns the base URL.
async fn canned_server(status: &str, content_type: &str, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = status.to_string();
    let content_type = content_type.to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        // Read the request head and its body before answering.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(body.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn openai_tolerates_servers_without_usage_index_or_done() {
    // Ollama-style: extra fields, tool call sent whole without `index`, no usage
    // chunk, and a finish_reason of "stop" despite the tool call; no [DONE].
    let chunks = [
        json!({"id": "x", "model": "llama", "created": 1, "system_fingerprint": "fp",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Checking."}, "finish_reason": null}]}),
        json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
            "finish_reason": null}]}),
        json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ];
    let body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    let base = canned_server("200 OK", "text/event-stream", body).await;
    let provider = OpenAiProvider::new(&base, RetryPolicy::none());
    let resp = complete(&provider, &request("ls")).await.0.unwrap();
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(
        resp.usage.input_tokens, 0,
        "no usage reported, none invented"
    );
    let (id, name, input) = only_tool_use(&resp);
    assert_eq!((id.as_str(), name.as_str()), ("call_abc", "bash"));
    assert_eq!(input, json!({"command": "ls"}));
    assert_eq!(text_of(&resp), "Checking.");
}

#[tokio::test]
async fn openai_without_usage_chunk_from_scripted_model_style_stream() {
    let chunks = [
        json!({"choices": [{"index": 0, "delta": {"content": "Hi "}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "there"}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
    ];
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    let base = canned_server("200 OK", "text/event-stream", body).await;
    let provider = OpenAiProvider::new(&base, RetryPolicy::none());
    let (result, pieces) = complete(&provider, &request("hi")).await;
    let resp = result.unwrap();
    assert_eq!(pieces, ["Hi ", "there"]);
    assert_eq!(resp.stop_reason, StopReason::MaxTokens);
    assert_eq!(resp.usage, Default::default());
}

#[tokio::test]
async fn anthropic_bad_tool_json_is_a_protocol_error() {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "type": "message",
            "role": "assistant", "content": [], "model": "x", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"command\": \"ls"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let body: String = events
        .iter()
        .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
        .collect();
    let base = canned_server("200 OK", "text/event-stream", body).await;
    let provider = AnthropicProvider::new(&base, RetryPolicy::immediate());
    let err = complete(&provider, &request("ls")).await.0.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("bash"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn anthropic_non_json_error_body_still_explains() {
    let base = canned_server(
        "403 Forbidden",
        "text/html",
        "<h1>denied by relay</h1>".into(),
    )
    .await;
    let provider = AnthropicProvider::new(&base, RetryPolicy::immediate());
    let err = complete(&provider, &request("hi")).await.0.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("403") && shown.contains("denied by relay"),
        "{shown}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn unreachable_relay_is_a_transport_error() {
    // Bind then drop, so nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let provider = AnthropicProvider::new(&format!("http://127.0.0.1:{port}"), RetryPolicy::none());
    let err = complete(&provider, &request("hi")).await.0.unwrap_err();
    assert!(matches!(err, ProviderError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("could not reach the model relay"));
}

#[test]
fn providers_are_registered_by_name() {
    let names: Vec<&str> = provider_names().collect();
    assert_eq!(names, ["anthropic", "openai"]);
    let p = provider_for("openai", "http://127.0.0.1:1", RetryPolicy::none()).unwrap();
    assert_eq!(p.name(), "openai");
    assert!(provider_for("nope", "http://127.0.0.1:1", RetryPolicy::none()).is_none());
}
