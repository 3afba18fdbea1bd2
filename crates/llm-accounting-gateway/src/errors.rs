//! Errors as each route's own SDK expects them: OpenAI's `{"error": {...}}`, Anthropic's
//! `{"type": "error", "error": {...}}`, with the HTTP status the SDKs map to their exception
//! classes (401 authentication, 403 permission, 429 rate limit, ...).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use llm_accounting::UpstreamApi;

/// A refusal by the gateway itself (upstream errors are passed through as they came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// What is wrong, for the client (never a key).
    pub message: String,
    /// A quota refusal: when the limit frees room (`retry-after`).
    pub resets_at: Option<DateTime<Utc>>,
}

impl Refusal {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            resets_at: None,
        }
    }

    /// 400: the request cannot be forwarded.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no, or no valid, virtual key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the virtual key may not make this call.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, message)
    }

    /// 429: over quota, with when it resets.
    pub fn quota(message: impl Into<String>, resets_at: Option<DateTime<Utc>>) -> Self {
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            resets_at,
        }
    }

    /// 502: the upstream could not be reached.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_GATEWAY, message)
    }

    /// 503: the gateway cannot serve now (its store is unreachable, ...).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// Seconds until the quota resets, at least 1.
    pub fn retry_after_secs(&self) -> Option<i64> {
        self.resets_at
            .map(|at| (at - Utc::now()).num_seconds().saturating_add(1).max(1))
    }

    /// The error type name of `api` for this status.
    fn kind(&self, api: UpstreamApi) -> &'static str {
        match (api, self.status.as_u16()) {
            (UpstreamApi::Anthropic, 400) => "invalid_request_error",
            (UpstreamApi::Anthropic, 401) => "authentication_error",
            (UpstreamApi::Anthropic, 403) => "permission_error",
            (UpstreamApi::Anthropic, 404) => "not_found_error",
            (UpstreamApi::Anthropic, 413) => "request_too_large",
            (UpstreamApi::Anthropic, 429) => "rate_limit_error",
            (UpstreamApi::Anthropic, 503) => "overloaded_error",
            (UpstreamApi::Anthropic, _) => "api_error",
            (_, 400 | 404 | 413) => "invalid_request_error",
            (_, 401) => "authentication_error",
            (_, 403) => "permission_error",
            (_, 429) => "rate_limit_exceeded",
            (_, _) => "server_error",
        }
    }

    /// The response in the format of `api`.
    pub fn into_response_for(self, api: UpstreamApi) -> Response {
        let kind = self.kind(api);
        let body = match api {
            UpstreamApi::Anthropic => json!({
                "type": "error",
                "error": {"type": kind, "message": self.message},
            }),
            _ => json!({
                "error": {
                    "message": self.message,
                    "type": kind,
                    "param": null,
                    "code": if self.status == StatusCode::TOO_MANY_REQUESTS {
                        Some("quota_exceeded")
                    } else {
                        None
                    },
                }
            }),
        };
        let retry = self.retry_after_secs();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_take_each_apis_shape() {
        let at = Utc::now() + chrono::Duration::seconds(90);
        let r = Refusal::quota("quota exceeded: limit #1", Some(at))
            .into_response_for(UpstreamApi::OpenAi);
        assert_eq!(r.status(), 429);
        let secs: i64 = r.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number");
        assert!((89..=91).contains(&secs), "{secs}");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "quota exceeded: limit #1");

        let r = Refusal::unauthorized("bad key").into_response_for(UpstreamApi::Anthropic);
        assert_eq!(r.status(), 401);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}
