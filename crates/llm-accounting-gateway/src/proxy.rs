//! One call through the gateway: authenticate, check, reserve, forward, account.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use llm_accounting::UpstreamApi;
use llm_accounting::usage::{CallUsage, QuotaRequest, Reservation};
use llm_accounting_core::{Error, ErrorKind, KeyIdentity};
use llm_accounting_usage::Money;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::errors::Refusal;
use crate::metrics::{ModelLabels, RequestLabels, TokenLabels, UpstreamLabels};
use crate::prices::{Price, Tokens};
use crate::server::Gateway;
use crate::virtual_keys::VirtualKey;
use crate::wire::{self, ReportedUsage, Route, SseUsage};

/// The response header with the gateway's request id (also in every log line of the call).
pub const REQUEST_ID_HEADER: &str = "x-llm-accounting-request-id";

/// The response header with the gateway's own time for the call, in milliseconds (the time
/// to the response headers minus the upstream's).
pub const GATEWAY_TIME_HEADER: &str = "x-llm-accounting-gateway-ms";

/// The request header that names the call's session (accounted with the usage).
pub const SESSION_HEADER: &str = "x-llm-accounting-session";

/// Request headers passed to the upstream (everything else, credentials first, stays here).
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "idempotency-key",
];

/// Response headers not passed back (hop-by-hop, and the length of a body re-framed here).
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-authenticate",
    "upgrade",
    "trailer",
];

/// Bytes of a whole (non-streamed) response kept to read its usage.
const MAX_BODY_READ: usize = 8 << 20;

/// The token a request presents: `Authorization: Bearer T` (OpenAI SDKs) or `x-api-key: T`
/// (Anthropic's).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Handles one request to `route`.
pub async fn handle(gw: Arc<Gateway>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let id = Uuid::new_v4();
    let span = tracing::info_span!("call", request_id = %id, route = route.name());
    let mut response = match call(&gw, route, &headers, body, started)
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err((refusal, labels)) => {
            let _enter = span.enter();
            tracing::info!(status = refusal.status.as_u16(), reason = %refusal.message, "refused");
            let own = started.elapsed();
            let mut r = refusal.into_response_for(route.api());
            answered(&gw, &mut r, route, labels, own, own);
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    response
}

/// A response with the upstream's status and headers (less the hop-by-hop ones), to be given
/// a body.
fn upstream_head(r: &reqwest::Response) -> axum::http::response::Builder {
    let mut response = Response::builder().status(r.status());
    for (name, value) in r.headers() {
        if !NOT_RETURNED.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    response
}

/// Counts one answered request and its times (`own`: the gateway's part of `total`), and
/// says the gateway's time in the response.
fn answered(
    gw: &Gateway,
    response: &mut Response,
    route: Route,
    labels: (String, String),
    total: Duration,
    own: Duration,
) {
    gw.metrics.timed(route.name(), total, own);
    gw.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.name().to_owned(),
            service: labels.0,
            model: labels.1,
            status: response.status().as_u16(),
        })
        .inc();
    set_time(response, own);
}

fn set_time(r: &mut Response, own: Duration) {
    let ms = format!("{:.3}", own.as_secs_f64() * 1e3);
    if let Ok(v) = HeaderValue::from_str(&ms) {
        r.headers_mut()
            .insert(HeaderName::from_static(GATEWAY_TIME_HEADER), v);
    }
}

/// A refusal with the (service, model) labels known when it happened.
type Refused = (Refusal, (String, String));

fn refused(r: Refusal) -> Refused {
    (r, ("none".to_owned(), "none".to_owned()))
}

/// What a core error means for the client.
fn refusal_of(e: &Error) -> Refusal {
    match e {
        Error::QuotaExceeded { message, resets_at } => Refusal::quota(message.clone(), *resets_at),
        e if e.kind() == ErrorKind::NotFound => Refusal::unavailable(format!(
            "the gateway holds no provider key for this call ({e})"
        )),
        e if e.kind() == ErrorKind::Disabled || e.kind() == ErrorKind::Expired => {
            Refusal::unavailable(format!(
                "the provider key for this call cannot be used: {e}"
            ))
        }
        e => {
            tracing::error!(error = %e, "could not serve the call");
            Refusal::unavailable(
                "the gateway could not serve this call (see its log for the request id)",
            )
        }
    }
}

async fn call(
    gw: &Arc<Gateway>,
    route: Route,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response, Refused> {
    let token = presented_token(headers).ok_or_else(|| {
        refused(Refusal::unauthorized(
            "no virtual key: send `Authorization: Bearer TOKEN` or `x-api-key: TOKEN`",
        ))
    })?;
    let vk = gw.auth.authenticate(token).await.map_err(refused)?;
    tracing::debug!(virtual_key = vk.id, "authenticated");

    if route == Route::Models {
        return list_models(gw, &vk, headers, started).await;
    }

    let bytes = axum::body::to_bytes(body, gw.config.max_body_bytes)
        .await
        .map_err(|_| {
            refused(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than gateway.max_body_bytes ({} bytes)",
                    gw.config.max_body_bytes
                ),
            ))
        })?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|e| {
        refused(Refusal::bad_request(format!(
            "the request body is not valid JSON: {e}"
        )))
    })?;
    let info = wire::inspect(route, &json, bytes.len())
        .map_err(|e| refused(Refusal::bad_request(e.to_string())))?;
    let (service, model) = gw.config.split_model(route.api(), &info.model);
    let (service, model) = (service.to_owned(), model.to_owned());
    let price = gw.config.prices.get(&service, &model);
    let labels = (
        service.clone(),
        if price.is_some() {
            model.clone()
        } else {
            "other".to_owned()
        },
    );
    let fail = |r: Refusal| (r, labels.clone());

    let upstream = gw.config.upstreams.get(&service).ok_or_else(|| {
        fail(Refusal::bad_request(format!(
            "no upstream for service \"{service}\""
        )))
    })?;
    if upstream.api != route.api() {
        let hint = match upstream.api {
            UpstreamApi::Anthropic => "/v1/messages",
            _ => "the OpenAI routes (/v1/chat/completions, ...)",
        };
        return Err(fail(Refusal::bad_request(format!(
            "service \"{service}\" speaks the {} API: call it through {hint}",
            upstream.api.as_str()
        ))));
    }
    vk.allows(&service, &model)
        .map_err(|m| fail(Refusal::forbidden(m)))?;

    let estimate = Tokens {
        prompt: info.input_estimate,
        cached: 0,
        completion: info.output_estimate,
    };
    let request = QuotaRequest::new(model.clone())
        .service(Some(service.clone()))
        .user(Some(vk.user.clone()))
        .project(vk.project.clone())
        .caller(vk.caller.clone())
        .tokens(estimate.prompt, estimate.completion)
        .cost(price.map_or(Money::ZERO, |p| p.cost(estimate)));
    if price.is_none()
        && gw.config.unpriced == llm_accounting::UnpricedModels::Deny
        && gw.cost_limit_applies(&request).await
    {
        return Err(fail(Refusal::forbidden(format!(
            "model \"{model}\" of service \"{service}\" has no price, and a cost limit applies to \
             this call: add it to gateway.prices_file, or set gateway.unpriced = \"allow\""
        ))));
    }

    // The key that serves the call, under a reservation of the estimate.
    let gated = gated_key(gw, &vk, &service, &request).await.map_err(|e| {
        if matches!(e, Error::QuotaExceeded { .. }) {
            gw.metrics
                .quota_denials
                .get_or_create(&ModelLabels {
                    service: labels.0.clone(),
                    model: labels.1.clone(),
                })
                .inc();
        }
        fail(refusal_of(&e))
    })?;

    let body = if wire::rewrite(route, &mut json, &model, info.stream) {
        Bytes::from(serde_json::to_vec(&json).unwrap_or_else(|_| bytes.to_vec()))
    } else {
        bytes
    };
    let url = format!("{}{}", upstream.base_url, route.upstream_path());
    let sent = Instant::now();
    let upstream_response = send(
        gw,
        Method::POST,
        &url,
        upstream.api,
        headers,
        &gated.key,
        Some(body),
    )
    .await;
    let upstream_response = match upstream_response {
        Ok(r) => r,
        Err(e) => {
            gw.metrics
                .upstream_errors
                .get_or_create(&UpstreamLabels {
                    service: service.clone(),
                    status: 0,
                })
                .inc();
            if let Err(e) = gated.reservation.release().await {
                tracing::warn!(error = %e, "could not release a reservation; it lapses by itself");
            }
            tracing::warn!(error = %without_url(&e), "upstream unreachable");
            return Err(fail(Refusal::bad_gateway(format!(
                "the upstream of service \"{service}\" could not be reached: {}",
                without_url(&e)
            ))));
        }
    };
    let upstream_wait = sent.elapsed();
    let status = upstream_response.status();
    if !status.is_success() {
        gw.metrics
            .upstream_errors
            .get_or_create(&UpstreamLabels {
                service: service.clone(),
                status: status.as_u16(),
            })
            .inc();
    }
    let streamed = upstream_response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let session = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let finisher = Finisher {
        gw: Arc::clone(gw),
        reservation: Some(gated.reservation),
        api: upstream.api,
        price,
        estimate,
        session,
        started,
        labels: labels.clone(),
    };
    let response = upstream_head(&upstream_response);
    let tap = if streamed {
        Tap::Sse(SseUsage::new(upstream.api))
    } else {
        Tap::Whole(Vec::new())
    };
    let body = AccountedBody {
        inner: Box::pin(upstream_response.bytes_stream()),
        tap,
        finisher: Some(finisher),
        done: false,
    };
    let mut response = response.body(Body::from_stream(body)).map_err(|_| {
        fail(Refusal::bad_gateway(
            "the upstream's response headers are invalid",
        ))
    })?;
    let total = started.elapsed();
    answered(
        gw,
        &mut response,
        route,
        labels,
        total,
        total.saturating_sub(upstream_wait),
    );
    tracing::info!(
        status = status.as_u16(),
        service,
        model,
        stream = streamed,
        "forwarded"
    );
    Ok(response)
}

/// The key serving the call and its reservation: the chosen identity (remembered), gated by
/// the quota. A remembered key that was deleted since is looked up again once.
async fn gated_key(
    gw: &Gateway,
    vk: &VirtualKey,
    service: &str,
    request: &QuotaRequest,
) -> Result<llm_accounting::usage::GatedKey, Error> {
    let manager = gw.stack.manager();
    let accounting = gw.accounting();
    for attempt in 0..2 {
        let identity: KeyIdentity = gw
            .provider_keys
            .resolve(manager, service, &vk.user, vk.project.as_deref())
            .await?;
        match accounting.get_key(manager, &identity, request).await {
            Err(e) if e.kind() == ErrorKind::NotFound && attempt == 0 => {
                gw.provider_keys
                    .forget(service, &vk.user, vk.project.as_deref());
            }
            other => return other,
        }
    }
    Err(Error::NotFound {
        identity: service.to_owned(),
    })
}

/// A reqwest error without its URL (which names the upstream's host only, but keep errors
/// short and free of anything from the request).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "the upstream");
    }
    s
}

/// Sends a request to the upstream with the provider key, retrying connection failures
/// `gateway.upstream_retries` times (a request that reached the upstream is never retried).
async fn send(
    gw: &Gateway,
    method: Method,
    url: &str,
    api: UpstreamApi,
    headers: &HeaderMap,
    key: &llm_accounting_core::ApiKey,
    body: Option<Bytes>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut attempt = 0;
    loop {
        let mut req = gw
            .client
            .request(method.clone(), url)
            .timeout(gw.config.upstream_timeout);
        for name in FORWARDED {
            if let Some(v) = headers.get(*name) {
                req = req.header(*name, v);
            }
        }
        let (name, value) = match api {
            UpstreamApi::Anthropic => ("x-api-key", key.expose_secret().to_owned()),
            _ => ("authorization", format!("Bearer {}", key.expose_secret())),
        };
        let mut value =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        req = req.header(name, value);
        if api == UpstreamApi::Anthropic && !headers.contains_key("anthropic-version") {
            req = req.header("anthropic-version", "2023-06-01");
        }
        if let Some(b) = &body {
            req = req.body(b.clone());
        }
        match req.send().await {
            Err(e) if e.is_connect() && attempt < gw.config.upstream_retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

/// `GET /v1/models` of the default service, passed through (costs nothing; not reserved).
async fn list_models(
    gw: &Arc<Gateway>,
    vk: &VirtualKey,
    headers: &HeaderMap,
    started: Instant,
) -> Result<Response, Refused> {
    let service = gw.config.default_service.clone();
    let labels = (service.clone(), "none".to_owned());
    let fail = |r: Refusal| (r, labels.clone());
    let upstream = gw
        .config
        .upstreams
        .get(&service)
        .ok_or_else(|| fail(Refusal::bad_request("no default service")))?;
    if let Some(services) = &vk.services
        && !services.contains(&service)
    {
        return Err(fail(Refusal::forbidden(format!(
            "this virtual key may not call service \"{service}\""
        ))));
    }
    let manager = gw.stack.manager();
    let identity = gw
        .provider_keys
        .resolve(manager, &service, &vk.user, vk.project.as_deref())
        .await
        .map_err(|e| fail(refusal_of(&e)))?;
    let key = manager
        .get(&identity)
        .await
        .map_err(|e| fail(refusal_of(&e)))?;
    let url = format!("{}{}", upstream.base_url, Route::Models.upstream_path());
    let sent = Instant::now();
    let r = send(gw, Method::GET, &url, upstream.api, headers, &key, None)
        .await
        .map_err(|e| {
            fail(Refusal::bad_gateway(format!(
                "the upstream could not be reached: {}",
                without_url(&e)
            )))
        })?;
    let wait = sent.elapsed();
    let response = upstream_head(&r);
    let bytes = r.bytes().await.map_err(|e| {
        fail(Refusal::bad_gateway(format!(
            "the upstream's answer was cut: {}",
            without_url(&e)
        )))
    })?;
    let mut response = response.body(Body::from(bytes)).map_err(|_| {
        fail(Refusal::bad_gateway(
            "the upstream's response headers are invalid",
        ))
    })?;
    let total = started.elapsed();
    let own = total.saturating_sub(wait);
    answered(gw, &mut response, Route::Models, labels, total, own);
    Ok(response)
}

/// What is read of a response as it passes.
enum Tap {
    /// A stream of events.
    Sse(SseUsage),
    /// A whole body (kept up to [`MAX_BODY_READ`]).
    Whole(Vec<u8>),
}

/// Commits a call's reservation once its response is over (or its client gone).
struct Finisher {
    gw: Arc<Gateway>,
    reservation: Option<Reservation>,
    api: UpstreamApi,
    price: Option<Price>,
    estimate: Tokens,
    session: Option<String>,
    started: Instant,
    labels: (String, String),
}

impl Finisher {
    /// Commits with `reported`, or, when the response was cut before it reported usage, the
    /// usage so far or else the estimate.
    fn finish(mut self, reported: Option<ReportedUsage>, complete: bool) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if !complete {
            self.gw.metrics.disconnects.inc();
        }
        let usage = match (reported, complete) {
            (Some(u), _) => u,
            (None, true) => ReportedUsage::default(),
            (None, false) => ReportedUsage {
                prompt: self.estimate.prompt,
                cached: 0,
                completion: self.estimate.completion,
                reasoning: 0,
            },
        };
        let tokens = Tokens {
            prompt: usage.prompt,
            cached: usage.cached,
            completion: usage.completion,
        };
        let cost = self.price.map_or(Money::ZERO, |p| p.cost(tokens));
        let mut call = CallUsage::new(usage.prompt, usage.completion, cost);
        call.cached_tokens = usage.cached;
        call.reasoning_tokens = usage.reasoning;
        call.execution_time = Some(self.started.elapsed());
        call.session = self.session.take();
        let m = &self.gw.metrics;
        for (kind, n) in [("prompt", usage.prompt), ("completion", usage.completion)] {
            m.tokens
                .get_or_create(&TokenLabels {
                    service: self.labels.0.clone(),
                    model: self.labels.1.clone(),
                    kind,
                })
                .inc_by(n);
        }
        m.cost_micros
            .get_or_create(&ModelLabels {
                service: self.labels.0.clone(),
                model: self.labels.1.clone(),
            })
            .inc_by(cost.micros());
        self.gw.commits.spawn(
            async move {
                if let Err(e) = reservation.commit(call).await {
                    tracing::error!(error = %e, "could not account a call; its reservation lapses");
                }
            }
            .in_current_span(),
        );
    }
}

/// The upstream's body on its way to the client, read as it passes; accounted when it ends
/// or when the client goes away (dropped).
struct AccountedBody {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    tap: Tap,
    finisher: Option<Finisher>,
    done: bool,
}

impl AccountedBody {
    fn usage(&self) -> Option<ReportedUsage> {
        match (&self.tap, &self.finisher) {
            (Tap::Sse(s), _) => s.usage(),
            (Tap::Whole(b), Some(f)) => wire::usage_of_body(f.api, b),
            (Tap::Whole(_), None) => None,
        }
    }

    fn finish(&mut self, complete: bool) {
        let usage = self.usage();
        if let Some(f) = self.finisher.take() {
            f.finish(usage, complete);
        }
    }
}

impl Stream for AccountedBody {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                match &mut this.tap {
                    Tap::Sse(s) => s.feed(&chunk),
                    Tap::Whole(b) => {
                        if b.len() + chunk.len() <= MAX_BODY_READ {
                            b.extend_from_slice(&chunk);
                        }
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for AccountedBody {
    fn drop(&mut self) {
        // The client went away before the end: the upstream call is cancelled (its stream is
        // dropped with this) and the call accounted with what was seen.
        self.finish(false);
    }
}
