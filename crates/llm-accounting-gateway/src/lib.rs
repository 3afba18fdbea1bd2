//! An LLM gateway over llm-accounting: applications call models through it with a virtual
//! key and never hold a provider key.
//!
//! Every request, in this order: the virtual key is authenticated ([`auth`]); the service and
//! model are checked against what the key may call; the quota is reserved with an estimate
//! (prompt size and `max_tokens`), strictly, in the accounting store; the provider key is
//! taken from the key manager's cache; the request is forwarded ([`proxy`]); the usage is read
//! from the response as it passes, streams included ([`wire`]); the reservation is committed
//! with the actual tokens and their cost from the price table ([`prices`]), as one usage
//! event with the user, project, caller, session, key identity and version.
//!
//! [`serve`] runs it until SIGTERM or Ctrl-C, then lets calls in flight finish and writes
//! their usage before it returns. `llm-accounting gateway serve` is the command.
//!
//! With `gateway.admin_token_file` set, it also serves the usage dashboard ([`dashboard`]).

pub mod auth;
pub mod config;
pub mod dashboard;
pub mod errors;
pub mod metrics;
pub mod prices;
pub mod provider_keys;
pub mod proxy;
mod server;
pub mod virtual_keys;
pub mod wire;

pub use config::{GatewayConfig, Upstream};
pub use server::{Gateway, serve, shutdown_signal};
pub use virtual_keys::{NewVirtualKey, Token, VirtualKey, VirtualKeys};

/// What can stop the gateway from starting or a virtual-key command from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong: the message names it.
    #[error("configuration error: {0}")]
    Config(String),
    /// The key store, the accounting store or the KMS.
    #[error(transparent)]
    Core(#[from] llm_accounting_core::Error),
    /// Listening or serving.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
