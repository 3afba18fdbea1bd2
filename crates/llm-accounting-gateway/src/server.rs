//! The gateway's state, routes, and its life: serving until a shutdown signal, then draining.

use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use llm_accounting::Stack;
use llm_accounting::usage::{Accounting, QuotaRequest};
use llm_accounting_usage::{Limit, LimitKind, applicable};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::Error;
use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::errors::Refusal;
use crate::metrics::Metrics;
use crate::provider_keys::ProviderKeys;
use crate::proxy;
use crate::virtual_keys::VirtualKeys;
use crate::wire::Route;

/// How long commits still running at the end of a drain get.
const COMMIT_GRACE: Duration = Duration::from_secs(30);

/// The gateway: its settings, the key and accounting stack, the virtual keys, and what it
/// counts. Shared by every request.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) stack: Arc<Stack>,
    accounting: Accounting,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) provider_keys: ProviderKeys,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: Metrics,
    pub(crate) commits: TaskTracker,
    limits: Mutex<Option<(Instant, Arc<Vec<Limit>>)>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `stack` (built with accounting), with its virtual keys loaded.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a stack without accounting; the store's errors loading the
    /// virtual keys (an unsealed store: seal it first).
    pub async fn new(config: GatewayConfig, stack: Arc<Stack>) -> Result<Arc<Self>, Error> {
        let accounting = stack.accounting().cloned().ok_or_else(|| {
            Error::Config("the gateway needs accounting (feature `accounting`)".into())
        })?;
        let keys = VirtualKeys::open(Arc::clone(stack.repository()), stack.manager()).await?;
        let auth = Authenticator::start(keys).await?;
        stack.manager().subscribe_changes(auth.subscriber());
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot make the upstream client: {e}")))?;
        Ok(Arc::new(Gateway {
            provider_keys: ProviderKeys::new(config.key_refresh),
            config,
            stack,
            accounting,
            auth,
            client,
            metrics: Metrics::default(),
            commits: TaskTracker::new(),
            limits: Mutex::new(None),
        }))
    }

    /// The accounting the gateway reserves and commits in.
    pub(crate) fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// The metrics (what `/metrics` shows).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether a cost limit applies to `request` (limits read at most every
    /// `gateway.key_refresh_ms`; when they cannot be read, yes).
    pub(crate) async fn cost_limit_applies(&self, request: &QuotaRequest) -> bool {
        let fresh = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.config.key_refresh)
            .map(|(_, l)| Arc::clone(l));
        let limits = match fresh {
            Some(l) => l,
            None => match self.accounting.store().limits().await {
                Ok(l) => {
                    let l = Arc::new(l);
                    *self.limits.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), Arc::clone(&l)));
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the limits");
                    return true;
                }
            },
        };
        applicable(&limits, request)
            .iter()
            .any(|l| l.kind == LimitKind::Cost)
    }

    /// The routes: the providers' APIs, `/healthz` and `/metrics`; with an admin token, the
    /// dashboard ([`crate::dashboard`]).
    pub fn router(self: &Arc<Self>) -> Router {
        let mut router = Router::new();
        for route in [
            Route::ChatCompletions,
            Route::Completions,
            Route::Embeddings,
            Route::Responses,
            Route::Models,
            Route::Messages,
        ] {
            router = router.route(route.path(), handler(route));
        }
        let router = router
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .with_state(Arc::clone(self));
        match &self.config.admin_token {
            Some(token) => router.merge(
                crate::dashboard::Dashboard::new(
                    Arc::clone(self.accounting.store()),
                    Some(self.stack.manager().clone()),
                    token.clone(),
                )
                .router(),
            ),
            None => router,
        }
    }

    /// Reloads the virtual keys every `gateway.key_refresh_ms` until the gateway is dropped.
    fn spawn_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.config.key_refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                if let Err(e) = gw.auth.reload().await {
                    tracing::warn!(error = %e, "could not reload the virtual keys; keeping those held");
                }
            }
        });
    }
}

fn handler(route: Route) -> MethodRouter<Arc<Gateway>> {
    let h = move |State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body| {
        proxy::handle(gw, route, headers, body)
    };
    if route == Route::Models {
        get(h)
    } else {
        post(h)
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.encode(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let api = if uri.path().starts_with("/v1/messages") {
        llm_accounting::UpstreamApi::Anthropic
    } else {
        llm_accounting::UpstreamApi::OpenAi
    };
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {} (routes: POST /v1/chat/completions, /v1/completions, \
             /v1/embeddings, /v1/responses, /v1/messages; GET /v1/models, /healthz, /metrics)",
            uri.path()
        ),
    )
    .into_response_for(api)
}

/// Serves `gateway` on `listener` until `shutdown` completes; then stops accepting, gives
/// calls in flight `gateway.drain_secs` to finish, waits for their usage to be written, and
/// shuts the stack down (every queued usage event written).
///
/// # Errors
///
/// [`Error::Io`] when serving fails; the stack's error shutting down.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    gateway.spawn_refresh();
    let app = gateway.router();
    let signalled = Arc::new(tokio::sync::Notify::new());
    let told = Arc::clone(&signalled);
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                told.notify_one();
            })
            .into_future(),
    );
    let served = tokio::select! {
        r = &mut server => Some(r),
        () = signalled.notified() => None,
    };
    let served = match served {
        Some(r) => r,
        None => {
            tracing::info!(
                drain_secs = gateway.config.drain.as_secs(),
                "shutting down: no new connections; calls in flight may finish"
            );
            match tokio::time::timeout(gateway.config.drain, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("drain time over: cutting the calls still running");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    gateway.commits.close();
    if tokio::time::timeout(COMMIT_GRACE, gateway.commits.wait())
        .await
        .is_err()
    {
        tracing::warn!("some calls' usage could not be written in time; their reservations lapse");
    }
    let stopped = gateway.stack.shutdown().await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Error::Io {
                what: "serving".into(),
                source: e,
            });
        }
        Err(e) => {
            return Err(Error::Io {
                what: "serving".into(),
                source: std::io::Error::other(e.to_string()),
            });
        }
    }
    stopped.map_err(Error::from)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
