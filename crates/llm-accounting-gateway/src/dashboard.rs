//! The live usage dashboard: the usage report's page at `/dashboard` (reloading on its own)
//! and its data at `/dashboard/api/report`, behind an admin token.
//!
//! The token is read from a file (`gateway.admin_token_file`, mode 0600 or stricter), never
//! from the configuration or the environment, and compared in constant time. A browser
//! sends it as the password of HTTP Basic authentication (it asks once; any user name), a
//! program as `Authorization: Bearer TOKEN`. Anything else is 401.
//!
//! Query parameters: `days` (1 to 366, default 30: the report covers the last `days` days,
//! today included) and `by` (`model`, `service`, `user`, `project`, `caller`, `key`; default
//! `model`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use chrono::{Duration, Utc};
use llm_accounting::usage::{GroupBy, Period, UsageStore};
use llm_accounting_core::SecureKeyManager;
use llm_accounting_report::{PageOptions, ReportQuery};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;

/// Seconds between the page's reloads.
pub const REFRESH_SECONDS: u32 = 30;

/// Shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The admin token: zeroized when dropped, never shown.
#[derive(Clone)]
pub struct AdminToken(Zeroizing<String>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Reads the token from `path`: its first line, trimmed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read, is readable or writable by its group
    /// or others (Unix), or holds fewer than [`MIN_TOKEN_CHARS`] characters.
    pub fn from_file(path: &Path) -> Result<AdminToken, Error> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::Config(format!(
                "gateway.admin_token_file {shown}: cannot read it: {e}"
            ))
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "gateway.admin_token_file {shown} has mode {mode:03o}: others could read \
                     the admin token (chmod 600 {shown})"
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "gateway.admin_token_file {shown}: cannot read it: {e}"
            ))
        })?);
        let token = text.lines().next().unwrap_or("").trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(Error::Config(format!(
                "gateway.admin_token_file {shown} holds no token of at least {MIN_TOKEN_CHARS} \
                 characters (make one: head -c 32 /dev/urandom | base64 > {shown})"
            )));
        }
        Ok(AdminToken(Zeroizing::new(token.to_owned())))
    }

    /// Whether `presented` is the token (constant time in its content).
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

/// What the dashboard reads and who may see it.
pub struct Dashboard {
    usage: Arc<dyn UsageStore>,
    keys: Option<SecureKeyManager>,
    token: AdminToken,
}

impl fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dashboard")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The dashboard's query parameters.
#[derive(Debug, Deserialize)]
struct Params {
    days: Option<u32>,
    by: Option<String>,
}

impl Dashboard {
    /// A dashboard over `usage`, with quota denials from `keys`' audit trail when given.
    pub fn new(
        usage: Arc<dyn UsageStore>,
        keys: Option<SecureKeyManager>,
        token: AdminToken,
    ) -> Arc<Dashboard> {
        Arc::new(Dashboard { usage, keys, token })
    }

    /// `/dashboard` and `/dashboard/api/report`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/dashboard", get(page))
            .route("/dashboard/", get(page))
            .route("/dashboard/api/report", get(api))
            .with_state(Arc::clone(self))
    }

    /// Serves the dashboard alone on `listener` until `shutdown` completes
    /// (`llm-accounting usage serve`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when serving fails.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Io {
                what: "serving the dashboard".to_owned(),
                source,
            })
    }

    /// Whether `headers` carry the token (Bearer, or Basic with it as the password).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.token.matches(token.trim().as_bytes());
        }
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let decoded = Zeroizing::new(decoded);
            return decoded
                .iter()
                .position(|b| *b == b':')
                .is_some_and(|at| self.token.matches(&decoded[at + 1..]));
        }
        false
    }

    /// The report the parameters ask for, or the response that refuses them.
    async fn report(
        &self,
        headers: &HeaderMap,
        params: &Params,
    ) -> Result<llm_accounting_report::Report, Response> {
        if !self.authorized(headers) {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "the dashboard needs the admin token (gateway.admin_token_file): as the \
                 password (any user name), or Authorization: Bearer TOKEN\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"llm-accounting dashboard\", charset=\"UTF-8\"",
                ),
            );
            return Err(response);
        }
        let days = params.days.unwrap_or(30);
        if !(1..=366).contains(&days) {
            return Err(bad("days must be from 1 to 366"));
        }
        let by = match params.by.as_deref().unwrap_or("model").parse() {
            Ok(by) if by != GroupBy::Nothing => by,
            _ => {
                return Err(bad(
                    "by must be model, service, user, project, caller or key",
                ));
            }
        };
        let now = Utc::now();
        let query = ReportQuery {
            since: Period::Day.start_of(now - Duration::days(i64::from(days) - 1)),
            until: now,
            by,
            now,
        };
        llm_accounting_report::gather(self.usage.as_ref(), self.keys.as_ref(), &query)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the dashboard could not read the usage");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the usage could not be read; see the gateway's log\n",
                )
                    .into_response()
            })
    }
}

fn bad(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// Responses that must not be cached or framed elsewhere.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn page(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    match d.report(&headers, &params).await {
        Ok(report) => {
            let html = llm_accounting_report::page(
                &report,
                &PageOptions {
                    refresh_seconds: Some(REFRESH_SECONDS),
                },
            );
            private(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
        }
        Err(refused) => private(refused),
    }
}

async fn api(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    match d.report(&headers, &params).await {
        Ok(report) => private(
            (
                [(header::CONTENT_TYPE, "application/json")],
                llm_accounting_report::json(&report),
            )
                .into_response(),
        ),
        Err(refused) => private(refused),
    }
}
