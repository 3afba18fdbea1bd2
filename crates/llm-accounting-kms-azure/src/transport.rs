//! An HTTP client that sends every request to one base URL.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Url, new_http_client};
use llm_accounting_core::{Error, Result};

/// Sends every request (Key Vault data plane and Entra ID token requests alike) to one base URL,
/// keeping path and query: `https://NAME.vault.azure.net/keys/k/wrapkey?api-version=...` goes
/// to `BASE/keys/k/wrapkey?api-version=...`. For emulators and test fakes reached over plain
/// `http://` (the SDK itself refuses to send a token over plain http, so the rewrite happens
/// below it, in the transport). Set with [`crate::AzureKeyVaultProviderBuilder::with_endpoint`].
pub struct EndpointOverride {
    base: String,
    inner: Arc<dyn HttpClient>,
}

impl fmt::Debug for EndpointOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointOverride")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl EndpointOverride {
    /// An override to `base` (`http://` or `https://`, host and port, no path).
    ///
    /// # Errors
    /// If `base` is not such a URL.
    pub fn new(base: &str) -> Result<Self> {
        let bad = || {
            Error::config(format!(
                "the Key Vault endpoint override `{base}` is not an http:// or https:// URL \
                 without a path"
            ))
        };
        let url = Url::parse(base).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
        {
            return Err(bad());
        }
        Ok(EndpointOverride {
            base: base.trim_end_matches('/').to_owned(),
            inner: new_http_client(None),
        })
    }
}

#[async_trait]
impl HttpClient for EndpointOverride {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut routed = request.clone();
        let target = format!("{}{}", self.base, request.path_and_query());
        *routed.url_mut() = Url::parse(&target)?;
        self.inner.execute_request(&routed).await
    }
}
