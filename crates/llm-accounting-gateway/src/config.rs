//! The gateway's settings, checked: `[gateway]` of the configuration
//! ([`llm_accounting::GatewaySettings`]) with addresses and URLs parsed and prices loaded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use llm_accounting::{GatewaySettings, UnpricedModels, UpstreamApi};

use crate::Error;
use crate::prices::Prices;

/// One upstream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The base URL, without a trailing `/`.
    pub base_url: String,
    /// Its wire format.
    pub api: UpstreamApi,
}

/// The gateway's settings, checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The service of OpenAI-style routes when the model names none.
    pub default_service: String,
    /// Per service.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Unpriced models under a cost limit.
    pub unpriced: UnpricedModels,
    /// The price table.
    pub prices: Prices,
    /// Retries of an upstream call that could not connect.
    pub upstream_retries: u32,
    /// Deadline of an upstream call, streams included.
    pub upstream_timeout: Duration,
    /// Time in-flight calls get after a shutdown signal.
    pub drain: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Reload interval of the virtual keys.
    pub key_refresh: Duration,
    /// The dashboard's admin token (`gateway.admin_token_file`); `None`: no dashboard.
    pub admin_token: Option<crate::dashboard::AdminToken>,
}

impl GatewayConfig {
    /// Checks `s`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting: an address that is not `HOST:PORT`, a base URL
    /// that is not `http(s)://...`, a price file that cannot be read.
    pub fn from_settings(s: &GatewaySettings) -> Result<Self, Error> {
        let listen = s.listen.parse().map_err(|_| {
            Error::Config(format!(
                "gateway.listen = {:?} is not an address and port (example: 127.0.0.1:4000)",
                s.listen
            ))
        })?;
        let mut upstreams = BTreeMap::new();
        for (service, u) in &s.upstreams {
            let url = u.base_url.trim_end_matches('/');
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
            if !ok {
                return Err(Error::Config(format!(
                    "gateway.upstreams.{service}.base_url = {:?} is not an http(s) URL \
                     (example: https://api.openai.com/v1)",
                    u.base_url
                )));
            }
            llm_accounting_core::validate_name("service", service)
                .map_err(|e| Error::Config(format!("gateway.upstreams.{service}: {e}")))?;
            upstreams.insert(
                service.clone(),
                Upstream {
                    base_url: url.to_owned(),
                    api: u.api,
                },
            );
        }
        if !upstreams.contains_key(&s.default_service) {
            return Err(Error::Config(format!(
                "gateway.default_service = {:?} has no [gateway.upstreams.{}]",
                s.default_service, s.default_service
            )));
        }
        Ok(GatewayConfig {
            listen,
            default_service: s.default_service.clone(),
            upstreams,
            unpriced: s.unpriced,
            prices: Prices::load(s.prices_file.as_deref())?,
            upstream_retries: s.upstream_retries,
            upstream_timeout: Duration::from_secs(s.upstream_timeout_secs.max(1)),
            drain: Duration::from_secs(s.drain_secs),
            max_body_bytes: s.max_body_bytes,
            key_refresh: Duration::from_millis(s.key_refresh_ms.max(1)),
            admin_token: s
                .admin_token_file
                .as_deref()
                .map(crate::dashboard::AdminToken::from_file)
                .transpose()?,
        })
    }

    /// The service and bare model a request names: `SERVICE/MODEL` when SERVICE is an
    /// upstream, else the route's default (`anthropic` for Anthropic routes, the default
    /// service for the others). A model name with a `/` that is no service (`meta-llama/...`)
    /// is left whole.
    pub fn split_model<'m>(&'m self, api: UpstreamApi, model: &'m str) -> (&'m str, &'m str) {
        if let Some((service, bare)) = model.split_once('/')
            && !bare.is_empty()
            && self.upstreams.contains_key(service)
        {
            return (service, bare);
        }
        let service = match api {
            UpstreamApi::Anthropic => self
                .upstreams
                .iter()
                .find(|(name, u)| *name == "anthropic" && u.api == UpstreamApi::Anthropic)
                .or_else(|| {
                    self.upstreams
                        .iter()
                        .find(|(_, u)| u.api == UpstreamApi::Anthropic)
                })
                .map_or("anthropic", |(name, _)| name.as_str()),
            _ => self.default_service.as_str(),
        };
        (service, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_models_split() {
        let mut s = GatewaySettings::default();
        let c = GatewayConfig::from_settings(&s).expect("defaults");
        assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(
            c.split_model(UpstreamApi::OpenAi, "gpt-4o"),
            ("openai", "gpt-4o")
        );
        assert_eq!(
            c.split_model(UpstreamApi::OpenAi, "anthropic/claude-x"),
            ("anthropic", "claude-x")
        );
        assert_eq!(
            c.split_model(UpstreamApi::Anthropic, "claude-x"),
            ("anthropic", "claude-x")
        );
        assert_eq!(
            c.split_model(UpstreamApi::OpenAi, "meta-llama/Llama-3"),
            ("openai", "meta-llama/Llama-3")
        );
        s.listen = "localhost".into();
        let e = GatewayConfig::from_settings(&s).expect_err("no port");
        assert!(e.to_string().contains("gateway.listen"), "{e}");
        let mut s = GatewaySettings::default();
        if let Some(u) = s.upstreams.get_mut("openai") {
            u.base_url = "api.openai.com/v1".into();
        }
        let e = GatewayConfig::from_settings(&s).expect_err("no scheme");
        assert!(
            e.to_string().contains("gateway.upstreams.openai.base_url"),
            "{e}"
        );
    }
}
