//! Settings whose value is one of a few names: the provider and the hierarchy.
//! (The providers' own choices are their crates' settings.)

use llm_accounting_core::choice_impls;
use llm_accounting_core::settings::Choice;

/// Every provider name llm-accounting knows, compiled in or not: the names of
/// [`KmsProviderKind::ALL`].
pub const PROVIDER_NAMES: &[&str] = &PROVIDER_NAME_ARRAY;

const PROVIDER_NAME_ARRAY: [&str; KmsProviderKind::ALL.len()] = {
    let mut names = [""; KmsProviderKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = KmsProviderKind::ALL[i].as_str();
        i += 1;
    }
    names
};

choice_impls!(
    KmsProviderKind,
    KmsHierarchy,
    AccountingEngine,
    RedisFallback,
    UpstreamApi,
    UnpricedModels
);

/// Which KMS holds the master key (`kms.provider`).
///
/// Every variant exists whatever features are compiled in, so that a provider whose feature
/// is off is reported as such ("built without feature kms-gcp") when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KmsProviderKind {
    /// The local-development provider: master keys in a file (feature `kms-local`).
    #[default]
    Local,
    /// AWS KMS (feature `kms-aws`).
    Aws,
    /// Azure Key Vault or Managed HSM (feature `kms-azure`).
    Azure,
    /// Google Cloud KMS (feature `kms-gcp`).
    Gcp,
}

impl KmsProviderKind {
    /// Every provider llm-accounting knows, compiled in or not.
    pub const ALL: &'static [KmsProviderKind] = &[
        KmsProviderKind::Local,
        KmsProviderKind::Aws,
        KmsProviderKind::Azure,
        KmsProviderKind::Gcp,
    ];

    /// The name in settings, on the command line and in stored records: `local`, `aws`,
    /// `azure` or `gcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "local",
            KmsProviderKind::Aws => "aws",
            KmsProviderKind::Azure => "azure",
            KmsProviderKind::Gcp => "gcp",
        }
    }

    /// The Cargo feature of the facade that compiles this provider in.
    pub const fn feature(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "kms-local",
            KmsProviderKind::Aws => "kms-aws",
            KmsProviderKind::Azure => "kms-azure",
            KmsProviderKind::Gcp => "kms-gcp",
        }
    }

    /// Whether this build of llm-accounting has the provider.
    pub const fn is_built(self) -> bool {
        match self {
            KmsProviderKind::Local => cfg!(feature = "kms-local"),
            KmsProviderKind::Aws => cfg!(feature = "kms-aws"),
            KmsProviderKind::Azure => cfg!(feature = "kms-azure"),
            KmsProviderKind::Gcp => cfg!(feature = "kms-gcp"),
        }
    }
}

impl Choice for KmsProviderKind {
    const WHAT: &'static str = "provider";
    const ALL: &'static [Self] = KmsProviderKind::ALL;
    const EMPTY_IS_DEFAULT: bool = false;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<str> for KmsProviderKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<&str> for KmsProviderKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How data keys are grouped under branch keys (`kms.hierarchy`; see
/// [`llm_accounting_core::branch`]): `off` wraps every data key with the KMS (one call per
/// key); the others make one branch key per store, service, project or user, wrapped by the
/// KMS, and wrap data keys locally under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KmsHierarchy {
    /// `off`: no branch keys (the default).
    #[default]
    Off,
    /// `store`: one branch key for the whole store.
    Store,
    /// `service`: one branch key per service.
    Service,
    /// `project`: one branch key per project (and one for keys without a project).
    Project,
    /// `user`: one branch key per user (and one for keys without a user).
    User,
}

impl KmsHierarchy {
    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        self.to_core().as_str()
    }

    /// The core's value.
    pub const fn to_core(self) -> llm_accounting_core::branch::Hierarchy {
        use llm_accounting_core::branch::Hierarchy;
        match self {
            KmsHierarchy::Off => Hierarchy::Off,
            KmsHierarchy::Store => Hierarchy::Store,
            KmsHierarchy::Service => Hierarchy::Service,
            KmsHierarchy::Project => Hierarchy::Project,
            KmsHierarchy::User => Hierarchy::User,
        }
    }
}

impl Choice for KmsHierarchy {
    const WHAT: &'static str = "KMS hierarchy";
    const ALL: &'static [Self] = &[
        KmsHierarchy::Off,
        KmsHierarchy::Store,
        KmsHierarchy::Service,
        KmsHierarchy::Project,
        KmsHierarchy::User,
    ];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Where quota reservations and counters live (`accounting.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AccountingEngine {
    /// `database`: in the accounting database, checked under its write lock (the default).
    #[default]
    Database,
    /// `redis`: in Redis (`accounting.redis_url`), one Lua script per check; usage events
    /// still go to the database, which rebuilds Redis's counters after a loss (feature
    /// `redis`).
    Redis,
}

impl AccountingEngine {
    /// Every engine.
    pub const ALL: &'static [AccountingEngine] =
        &[AccountingEngine::Database, AccountingEngine::Redis];

    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountingEngine::Database => "database",
            AccountingEngine::Redis => "redis",
        }
    }
}

impl Choice for AccountingEngine {
    const WHAT: &'static str = "accounting engine";
    const ALL: &'static [Self] = AccountingEngine::ALL;
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// What answers quota calls when the Redis engine cannot reach Redis
/// (`accounting.redis_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RedisFallback {
    /// `none` (or empty): nothing; calls fail as unavailable (exit 5).
    #[default]
    None,
    /// `database`: the database engine, with a warning.
    Database,
}

impl RedisFallback {
    /// Every value.
    pub const ALL: &'static [RedisFallback] = &[RedisFallback::None, RedisFallback::Database];

    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedisFallback::None => "none",
            RedisFallback::Database => "database",
        }
    }
}

impl Choice for RedisFallback {
    const WHAT: &'static str = "Redis fallback";
    const ALL: &'static [Self] = RedisFallback::ALL;
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The wire format an upstream of the gateway speaks (`gateway.upstreams.<service>.api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UpstreamApi {
    /// `openai`: OpenAI's REST API (and every OpenAI-compatible service).
    #[default]
    OpenAi,
    /// `anthropic`: Anthropic's Messages API.
    Anthropic,
}

impl UpstreamApi {
    /// Every API.
    pub const ALL: &'static [UpstreamApi] = &[UpstreamApi::OpenAi, UpstreamApi::Anthropic];

    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamApi::OpenAi => "openai",
            UpstreamApi::Anthropic => "anthropic",
        }
    }
}

impl Choice for UpstreamApi {
    const WHAT: &'static str = "upstream API";
    const ALL: &'static [Self] = UpstreamApi::ALL;
    const EMPTY_IS_DEFAULT: bool = false;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// What the gateway does with a call to a model that has no price while a cost limit governs
/// the call (`gateway.unpriced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UnpricedModels {
    /// `deny`: refuse it (403): its cost could not be counted against the limit.
    #[default]
    Deny,
    /// `allow`: let it through, counted at zero cost (its tokens and requests still count).
    Allow,
}

impl UnpricedModels {
    /// Every value.
    pub const ALL: &'static [UnpricedModels] = &[UnpricedModels::Deny, UnpricedModels::Allow];

    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            UnpricedModels::Deny => "deny",
            UnpricedModels::Allow => "allow",
        }
    }
}

impl Choice for UnpricedModels {
    const WHAT: &'static str = "unpriced-model policy";
    const ALL: &'static [Self] = UnpricedModels::ALL;
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}
