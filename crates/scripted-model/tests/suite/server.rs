//! The scripted model over real HTTP, checked against the documented wire formats.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_scripted_model::{Fault, Matcher, Reply, Scenario, ScriptedModel};
use serde_json::{Value, json};

/// Parses an SSE body into (event name, JSON data) pairs.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut event = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            (event, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

async fn post_anthropic(
    model: &ScriptedModel,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/messages", model.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&body);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.send().await.unwrap()
}

fn user(text: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 1024, "stream": true,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn anthropic_stream_follows_documented_event_order() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let resp = post_anthropic(&model, None, user("hello there friend")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[1], "content_block_start");
    assert!(names.contains(&"ping"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], json!(name), "event name matches data.type");
    }
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(deltas.len() > 1, "text arrives in several deltas");
    assert_eq!(deltas.concat(), "echo: hello there friend");
    let start = &events[0].1["message"];
    assert_eq!(start["role"], "assistant");
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let delta = &events[names.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_tool_use_streams_split_json() {
    let model = ScriptedModel::start(Scenario::demo_uname()).await.unwrap();
    let events = sse_events(
        &post_anthropic(&model, None, user("what kernel?"))
            .await
            .text()
            .await
            .unwrap(),
    );
    let tool_start = events
        .iter()
        .find(|(e, d)| e == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    let index = tool_start.1["index"].clone();
    assert_eq!(tool_start.1["content_block"]["name"], "bash");
    let id = tool_start.1["content_block"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("toolu_"));
    let parts: Vec<&str> = events
        .iter()
        .filter(|(e, d)| e == "content_block_delta" && d["index"] == index)
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(parts.len() > 2, "input JSON is split: {parts:?}");
    let input: Value = serde_json::from_str(&parts.concat()).unwrap();
    assert_eq!(input, json!({"command": "uname -sr"}));
    let stop = events.iter().find(|(e, _)| e == "message_delta").unwrap();
    assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");

    // The tool result comes back: the reply quotes it (non-streaming this time).
    let body = json!({"model": "claude-test", "max_tokens": 1024, "messages": [
        {"role": "user", "content": "what kernel?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "bash", "input": input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "Linux 6.1.0"}]}
    ]});
    let resp = post_anthropic(&model, None, body).await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(
        msg["content"][0]["text"],
        "I ran `uname -sr` in my sandbox. It printed: Linux 6.1.0"
    );
}

#[tokio::test]
async fn anthropic_auth_failure_uses_documented_body() {
    let model = ScriptedModel::start(Scenario::echo().with_api_key("sk-right"))
        .await
        .unwrap();
    let resp = post_anthropic(&model, Some("sk-wrong"), user("hi")).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let resp = post_anthropic(&model, None, user("hi")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        post_anthropic(&model, Some("sk-right"), user("hi"))
            .await
            .status(),
        200
    );
    // Recorded with headers, so tests can see what a client sent.
    let reqs = model.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].header("X-Api-Key"), Some("sk-right"));
    assert_eq!(reqs[2].body["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn anthropic_rejects_bad_requests_with_400() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    // No anthropic-version header.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", model.base_url()))
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    for bad in [
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": []}),
        json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "a"}]}),
    ] {
        let resp = post_anthropic(&model, None, bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
}

#[tokio::test]
async fn faults_are_served_once_in_order() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::rate_limited(7));
    model.push_fault(Fault::overloaded());
    model.push_fault(Fault::status(500, "api_error", "Internal server error"));

    let resp = post_anthropic(&model, None, user("hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let resp = post_anthropic(&model, None, user("hi")).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");

    let resp = post_anthropic(&model, None, user("hi")).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(post_anthropic(&model, None, user("hi")).await.status(), 200);
}

#[tokio::test]
async fn stream_error_fault_breaks_the_stream_with_an_error_event() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    model.push_fault(Fault::stream_overloaded());
    let events = sse_events(
        &post_anthropic(&model, None, user("one two three four"))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events[0].0, "message_start");
    assert!(events.iter().any(|(e, _)| e == "content_block_delta"));
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(last["error"]["type"], "overloaded_error");
    assert!(!events.iter().any(|(e, _)| e == "message_stop"));
}

#[tokio::test]
async fn max_tokens_truncates_and_says_so() {
    let model = ScriptedModel::start(Scenario::new().rule(
        Matcher::Always,
        Reply::text("a very long answer that will not fit into two tokens at all"),
    ))
    .await
    .unwrap();
    let body =
        json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let msg: Value = post_anthropic(&model, None, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["stop_reason"], "max_tokens");
    assert_eq!(msg["content"][0]["text"], "a very l");
}

#[tokio::test]
async fn anthropic_reports_cache_reads_for_a_repeated_prefix() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let body = |question: &str| {
        json!({"model": "m", "max_tokens": 100,
               "system": [{"type": "text", "text": "You are Andy. ".repeat(50), "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]})
    };
    let first: Value = post_anthropic(&model, None, body("a"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    assert!(
        first["usage"]["cache_creation_input_tokens"]
            .as_u64()
            .unwrap()
            > 100
    );
    let second: Value = post_anthropic(&model, None, body("b"))
        .await
        .json()
        .await
        .unwrap();
    assert!(second["usage"]["cache_read_input_tokens"].as_u64().unwrap() > 100);
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
}

async fn post_openai(
    model: &ScriptedModel,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", model.base_url()))
        .json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

/// The JSON chunks of an OpenAI stream, and whether it ended with `[DONE]`.
fn openai_chunks(body: &str) -> (Vec<Value>, bool) {
    let datas: Vec<&str> = body
        .split("\n\n")
        .filter_map(|f| f.trim().strip_prefix("data: "))
        .collect();
    let done = datas.last() == Some(&"[DONE]");
    let chunks = datas
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn openai_streams_tool_calls_in_chunks_then_usage_and_done() {
    let model = ScriptedModel::start(Scenario::demo_uname()).await.unwrap();
    let body = json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "what kernel?"}],
                      "tools": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]});
    let resp = post_openai(&model, "/openai/chat/completions", None, body).await;
    assert_eq!(resp.status(), 200);
    let (chunks, done) = openai_chunks(&resp.text().await.unwrap());
    assert!(done, "stream ends with [DONE]");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check which kernel my sandbox runs.");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(calls.len() > 2, "arguments split across chunks");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"]["name"], "bash");
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"command": "uname -sr"})
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn openai_without_include_usage_has_no_usage_chunk() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi you"}]});
    let (chunks, done) = openai_chunks(
        &post_openai(&model, "/v1/chat/completions", None, body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(done);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn openai_non_stream_and_tool_results() {
    let model = ScriptedModel::start(Scenario::demo_uname()).await.unwrap();
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "what kernel?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "bash", "arguments": "{\"command\":\"uname -sr\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Linux 6.1.0"}
    ]});
    let resp = post_openai(&model, "/openai/v1/chat/completions", None, body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "I ran `uname -sr` in my sandbox. It printed: Linux 6.1.0"
    );
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn openai_auth_and_faults() {
    let model = ScriptedModel::start(Scenario::echo().with_api_key("sk-right"))
        .await
        .unwrap();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_openai(
        &model,
        "/v1/chat/completions",
        Some("sk-wrong"),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    model.push_fault(Fault::rate_limited(3));
    model.push_fault(Fault::status(
        503,
        "server_error",
        "The server is overloaded",
    ));
    let resp = post_openai(
        &model,
        "/v1/chat/completions",
        Some("sk-right"),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let resp = post_openai(
        &model,
        "/v1/chat/completions",
        Some("sk-right"),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "The server is overloaded");
    let resp = post_openai(&model, "/v1/chat/completions", Some("sk-right"), body).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn set_scenario_changes_following_answers() {
    let model = ScriptedModel::start(Scenario::new()).await.unwrap();
    let body =
        json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let v: Value = post_anthropic(&model, None, body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["content"][0]["text"],
        nanoclaw_scripted_model::NO_RULE_MATCHED
    );
    model.set_scenario(Scenario::echo());
    let v: Value = post_anthropic(&model, None, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], "echo: hi");
}
