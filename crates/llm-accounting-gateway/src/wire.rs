//! The providers' wire formats, as far as the gateway reads them: the route a request came
//! to, the model and the size of a request, and the usage a response reports (whole JSON
//! bodies and server-sent event streams).

use serde_json::Value;

use llm_accounting::UpstreamApi;

/// Completion tokens held for a request that names no maximum.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 1_024;

/// Bytes of request per estimated prompt token (an over-estimate for English text, so that
/// the estimate held is rarely below what the call uses).
const BYTES_PER_TOKEN: u64 = 3;

/// A route of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/completions` (OpenAI).
    Completions,
    /// `POST /v1/embeddings` (OpenAI).
    Embeddings,
    /// `POST /v1/responses` (OpenAI).
    Responses,
    /// `GET /v1/models` (OpenAI).
    Models,
    /// `POST /v1/messages` (Anthropic).
    Messages,
}

impl Route {
    /// The path (under the gateway's root).
    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Responses => "/v1/responses",
            Route::Models => "/v1/models",
            Route::Messages => "/v1/messages",
        }
    }

    /// The API whose route it is.
    pub fn api(self) -> UpstreamApi {
        match self {
            Route::Messages => UpstreamApi::Anthropic,
            _ => UpstreamApi::OpenAi,
        }
    }

    /// The short name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Models => "models",
            Route::Messages => "messages",
        }
    }

    /// The path at the upstream, relative to its base URL as its SDK takes it (OpenAI bases
    /// end in `/v1`; Anthropic's does not).
    pub fn upstream_path(self) -> &'static str {
        match self.api() {
            UpstreamApi::Anthropic => self.path(),
            _ => self.path().trim_start_matches("/v1"),
        }
    }
}

/// What the gateway reads of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The model as the client named it (possibly `SERVICE/MODEL`).
    pub model: String,
    /// Whether the response is a stream.
    pub stream: bool,
    /// Estimated prompt tokens.
    pub input_estimate: u64,
    /// Estimated completion tokens (the request's maximum, or [`DEFAULT_OUTPUT_ESTIMATE`]).
    pub output_estimate: u64,
}

/// Why a request body cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Not a JSON object.
    NotJson(String),
    /// No `model` string.
    NoModel,
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::NotJson(e) => write!(f, "the request body is not a JSON object: {e}"),
            BadRequest::NoModel => f.write_str("the request names no model (\"model\": \"...\")"),
        }
    }
}

/// Reads `body` (a JSON object) sent to `route`.
///
/// # Errors
///
/// [`BadRequest`] for a body that is not a JSON object or names no model.
pub fn inspect(route: Route, body: &Value, size: usize) -> Result<RequestInfo, BadRequest> {
    let Some(obj) = body.as_object() else {
        return Err(BadRequest::NotJson("expected an object".to_owned()));
    };
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or(BadRequest::NoModel)?
        .to_owned();
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_u64));
    let output_estimate = match route {
        Route::Embeddings => 0,
        _ => max.unwrap_or(DEFAULT_OUTPUT_ESTIMATE),
    };
    Ok(RequestInfo {
        model,
        stream,
        input_estimate: u64::try_from(size).unwrap_or(u64::MAX) / BYTES_PER_TOKEN + 1,
        output_estimate,
    })
}

/// Prepares `body` for the upstream: the bare model name, and for OpenAI streams of chat and
/// completions, `stream_options.include_usage` so that the last event reports usage (unless
/// the client set it; a client that turned it off gets no usage event, and the call is
/// accounted at its estimate). Returns whether anything changed.
pub fn rewrite(route: Route, body: &mut Value, bare_model: &str, stream: bool) -> bool {
    let Some(obj) = body.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    if obj.get("model").and_then(Value::as_str) != Some(bare_model) {
        obj.insert("model".to_owned(), Value::from(bare_model));
        changed = true;
    }
    if stream && matches!(route, Route::ChatCompletions | Route::Completions) {
        let options = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(options) = options.as_object_mut()
            && !options.contains_key("include_usage")
        {
            options.insert("include_usage".to_owned(), Value::Bool(true));
            changed = true;
        }
    }
    changed
}

/// Usage a response reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedUsage {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// Of which read from the provider's cache.
    pub cached: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Of which reasoning.
    pub reasoning: u64,
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_u64()
}

/// The usage in an OpenAI `usage` object (chat, completions, embeddings: `prompt_tokens`;
/// responses: `input_tokens`).
fn openai_usage(usage: &Value) -> Option<ReportedUsage> {
    if !usage.is_object() {
        return None;
    }
    let prompt = u(usage, &["prompt_tokens"]).or_else(|| u(usage, &["input_tokens"]))?;
    Some(ReportedUsage {
        prompt,
        cached: u(usage, &["prompt_tokens_details", "cached_tokens"])
            .or_else(|| u(usage, &["input_tokens_details", "cached_tokens"]))
            .unwrap_or(0),
        completion: u(usage, &["completion_tokens"])
            .or_else(|| u(usage, &["output_tokens"]))
            .unwrap_or(0),
        reasoning: u(usage, &["completion_tokens_details", "reasoning_tokens"])
            .or_else(|| u(usage, &["output_tokens_details", "reasoning_tokens"]))
            .unwrap_or(0),
    })
}

/// An Anthropic `usage` object: input tokens exclude those read from or written to the
/// cache, which are counted as prompt tokens here.
fn anthropic_usage(usage: &Value) -> Option<ReportedUsage> {
    if !usage.is_object() {
        return None;
    }
    let input = u(usage, &["input_tokens"]).unwrap_or(0);
    let read = u(usage, &["cache_read_input_tokens"]).unwrap_or(0);
    let written = u(usage, &["cache_creation_input_tokens"]).unwrap_or(0);
    Some(ReportedUsage {
        prompt: input + read + written,
        cached: read,
        completion: u(usage, &["output_tokens"]).unwrap_or(0),
        reasoning: 0,
    })
}

/// The usage in a whole (non-streamed) response body of `api`.
pub fn usage_of_body(api: UpstreamApi, body: &[u8]) -> Option<ReportedUsage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let usage = v.get("usage")?;
    match api {
        UpstreamApi::Anthropic => anthropic_usage(usage),
        _ => openai_usage(usage),
    }
}

/// Reads a server-sent event stream as it passes, keeping the usage its events report:
/// OpenAI's last chunk (`usage`, with `stream_options.include_usage`), the Responses API's
/// `response.completed` (`response.usage`), Anthropic's `message_start` (input) and
/// `message_delta` (output so far). Lines are bounded: a line longer than
/// [`MAX_LINE_BYTES`] is skipped.
#[derive(Debug)]
pub struct SseUsage {
    api: UpstreamApi,
    line: Vec<u8>,
    overflow: bool,
    usage: Option<ReportedUsage>,
    /// Text events seen (a stream cut before any usage still produced output).
    pub events: u64,
}

/// Longest event line kept for reading.
pub const MAX_LINE_BYTES: usize = 1 << 20;

impl SseUsage {
    /// A reader for a stream of `api`.
    pub fn new(api: UpstreamApi) -> Self {
        SseUsage {
            api,
            line: Vec::new(),
            overflow: false,
            usage: None,
            events: 0,
        }
    }

    /// Reads `chunk` (any split of the stream).
    pub fn feed(&mut self, chunk: &[u8]) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if self.line.len() + piece.len() > MAX_LINE_BYTES {
                self.overflow = true;
            } else if !self.overflow {
                self.line.extend_from_slice(piece);
            }
            if piece.ends_with(b"\n") {
                if !self.overflow {
                    let line = std::mem::take(&mut self.line);
                    self.read_line(&line);
                }
                self.line.clear();
                self.overflow = false;
            }
        }
    }

    fn read_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        self.events += 1;
        match self.api {
            UpstreamApi::Anthropic => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(usage) = v.get("message").and_then(|m| m.get("usage")) {
                        self.usage = anthropic_usage(usage);
                    }
                }
                Some("message_delta") => {
                    if let Some(usage) = v.get("usage") {
                        let mut now = self.usage.unwrap_or_default();
                        if let Some(out) = u(usage, &["output_tokens"]) {
                            now.completion = out;
                        }
                        // Newer streams repeat the input counts here.
                        if let Some(delta) = anthropic_usage(usage)
                            && delta.prompt > 0
                        {
                            now.prompt = delta.prompt;
                            now.cached = delta.cached;
                        }
                        self.usage = Some(now);
                    }
                }
                _ => {}
            },
            _ => {
                if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
                    self.usage = openai_usage(usage).or(self.usage);
                } else if let Some(usage) = v.get("response").and_then(|r| r.get("usage")) {
                    self.usage = openai_usage(usage).or(self.usage);
                }
            }
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<ReportedUsage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_and_rewritten() {
        let body =
            json!({"model": "mistral/large", "stream": true, "max_tokens": 50, "messages": []});
        let info = inspect(Route::ChatCompletions, &body, 300).expect("ok");
        assert_eq!(info.model, "mistral/large");
        assert!(info.stream);
        assert_eq!(info.output_estimate, 50);
        assert_eq!(info.input_estimate, 101);
        let mut b = body.clone();
        assert!(rewrite(Route::ChatCompletions, &mut b, "large", true));
        assert_eq!(b["model"], "large");
        assert_eq!(b["stream_options"]["include_usage"], true);
        // A client's own choice is kept.
        let mut b =
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": false}});
        assert!(!rewrite(Route::ChatCompletions, &mut b, "m", true));
        assert_eq!(b["stream_options"]["include_usage"], false);
        // Anthropic streams report usage without being asked.
        let mut b = json!({"model": "claude", "stream": true});
        assert!(!rewrite(Route::Messages, &mut b, "claude", true));
        assert_eq!(
            inspect(Route::Embeddings, &json!({"model": "e", "input": "x"}), 10)
                .expect("ok")
                .output_estimate,
            0
        );
        assert_eq!(
            inspect(Route::Messages, &json!({"max_tokens": 3}), 10),
            Err(BadRequest::NoModel)
        );
        assert!(matches!(
            inspect(Route::Messages, &json!([1]), 10),
            Err(BadRequest::NotJson(_))
        ));
    }

    #[test]
    fn usage_is_read_from_bodies() {
        let openai = br#"{"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        assert_eq!(
            usage_of_body(UpstreamApi::OpenAi, openai),
            Some(ReportedUsage {
                prompt: 12,
                cached: 4,
                completion: 5,
                reasoning: 2
            })
        );
        let responses = br#"{"usage":{"input_tokens":7,"output_tokens":3}}"#;
        assert_eq!(
            usage_of_body(UpstreamApi::OpenAi, responses).map(|u| (u.prompt, u.completion)),
            Some((7, 3))
        );
        let anthropic =
            br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":100,"output_tokens":5}}"#;
        assert_eq!(
            usage_of_body(UpstreamApi::Anthropic, anthropic),
            Some(ReportedUsage {
                prompt: 110,
                cached: 100,
                completion: 5,
                reasoning: 0
            })
        );
        assert_eq!(usage_of_body(UpstreamApi::OpenAi, b"{\"error\":{}}"), None);
        assert_eq!(usage_of_body(UpstreamApi::OpenAi, b"not json"), None);
    }

    #[test]
    fn usage_is_read_from_streams_split_anywhere() {
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5}}\n\n\
                      data: [DONE]\n\n";
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
                         event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n\
                         event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n";
        let responses = "event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":5}}}\r\n\r\n";
        for (api, text) in [
            (UpstreamApi::OpenAi, openai),
            (UpstreamApi::Anthropic, anthropic),
            (UpstreamApi::OpenAi, responses),
        ] {
            for split in [1, 3, 7, 64, text.len()] {
                let mut r = SseUsage::new(api);
                for chunk in text.as_bytes().chunks(split) {
                    r.feed(chunk);
                }
                let got = r.usage().expect("usage");
                assert_eq!(
                    (got.prompt, got.completion),
                    (12, 5),
                    "{api:?} split {split}"
                );
            }
        }
        // A stream cut after message_start has the input and the first output token.
        let mut r = SseUsage::new(UpstreamApi::Anthropic);
        r.feed(
            anthropic
                .split("event: content_block_delta")
                .next()
                .expect("head")
                .as_bytes(),
        );
        assert_eq!(r.usage().map(|u| (u.prompt, u.completion)), Some((12, 1)));
        // An endless line is skipped, not kept.
        let mut r = SseUsage::new(UpstreamApi::OpenAi);
        r.feed(&vec![b'x'; MAX_LINE_BYTES + 10]);
        r.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n");
        assert_eq!(r.usage().map(|u| u.completion), Some(2));
    }
}
