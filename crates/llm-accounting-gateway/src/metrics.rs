//! `/metrics`, in the Prometheus text format: requests by route, service, model and status;
//! latency and the gateway's own time (overhead); tokens; cost; quota denials; upstream
//! errors. Models without a price are counted as `other`, so that clients cannot grow the
//! number of series without bound.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's name.
    pub route: String,
    /// The service.
    pub service: String,
    /// The model (`other` when unpriced).
    pub model: String,
    /// The HTTP status returned.
    pub status: u16,
}

/// Labels of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's name.
    pub route: String,
}

/// Labels of token counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The service.
    pub service: String,
    /// The model (`other` when unpriced).
    pub model: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// Labels of cost.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The service.
    pub service: String,
    /// The model (`other` when unpriced).
    pub model: String,
}

/// Labels of upstream errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The service.
    pub service: String,
    /// The status, or 0 when the upstream could not be reached.
    pub status: u16,
}

fn latency() -> Histogram {
    // 50 us to ~105 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

fn overhead() -> Histogram {
    // 10 us to ~84 ms.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response's headers.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The gateway's own time (latency minus the upstream's).
    pub overhead: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Tokens accounted.
    pub tokens: Family<TokenLabels, Counter>,
    /// Cost accounted, in micro-dollars.
    pub cost_micros: Family<ModelLabels, Counter>,
    /// Requests refused by a quota.
    pub quota_denials: Family<ModelLabels, Counter>,
    /// Upstream failures (unreachable, or an error status).
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// Calls whose client went away before the response ended.
    pub disconnects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("llm_accounting_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered", requests.clone());
        let latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "request_duration_seconds",
            "Time to the response headers, upstream included",
            latency.clone(),
        );
        let overhead =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(overhead);
        registry.register(
            "overhead_seconds",
            "The gateway's own time per request (latency minus the upstream's)",
            overhead.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register("tokens", "Tokens accounted", tokens.clone());
        let cost_micros = Family::<ModelLabels, Counter>::default();
        registry.register(
            "cost_micro_dollars",
            "Cost accounted, in micro-dollars",
            cost_micros.clone(),
        );
        let quota_denials = Family::<ModelLabels, Counter>::default();
        registry.register(
            "quota_denials",
            "Requests refused by a quota (HTTP 429)",
            quota_denials.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream calls that failed (status 0: not reached)",
            upstream_errors.clone(),
        );
        let disconnects = Counter::default();
        registry.register(
            "client_disconnects",
            "Calls whose client went away before the response ended",
            disconnects.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            overhead,
            tokens,
            cost_micros,
            quota_denials,
            upstream_errors,
            disconnects,
        }
    }
}

impl Metrics {
    /// Observes a request's latency and the gateway's own part of it.
    pub fn timed(&self, route: &str, total: Duration, own: Duration) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.latency
            .get_or_create(&labels)
            .observe(total.as_secs_f64());
        self.overhead
            .get_or_create(&labels)
            .observe(own.as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_in_the_text_format() {
        let m = Metrics::default();
        m.requests
            .get_or_create(&RequestLabels {
                route: "chat_completions".into(),
                service: "openai".into(),
                model: "gpt-4o".into(),
                status: 200,
            })
            .inc();
        m.timed(
            "chat_completions",
            Duration::from_millis(3),
            Duration::from_micros(200),
        );
        let text = m.encode();
        assert!(
            text.contains(
                "llm_accounting_gateway_requests_total{route=\"chat_completions\",service=\"openai\",model=\"gpt-4o\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("llm_accounting_gateway_overhead_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
