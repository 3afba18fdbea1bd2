//! Virtual keys: the tokens applications send to the gateway instead of a provider key.
//!
//! A token is `llmacc-<id>-<secret>`, the secret 256 random bits (base64url). It is shown
//! once, when made, and never stored: the row holds `token_mac`, an HMAC-SHA-256 of the id
//! and secret, and `row_mac`, an HMAC of everything the row grants (user, project, caller,
//! services, models, expiry, revocation) and of `token_mac`, both under a key derived from
//! the store's state key ([`SecureKeyManager::purpose_key`]). Someone who can read the
//! database learns no token; someone who can write it can mint none, and cannot widen, extend
//! or un-revoke a key by editing its row (the row then fails its MAC and the key is refused).
//! Putting back a whole older row (one from before a revocation) is the replay a database
//! writer can still do; see SECURITY.md.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use llm_accounting_core::{Change, DataKey, Error, Result, SecureKeyManager, random_bytes};
use llm_accounting_store::{SeaOrmKeyRepository, database_error};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The purpose of the key the MACs are made under.
pub const PURPOSE: &str = "llm-accounting/gateway/virtual-keys/v1";

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "llmacc-";

/// The change notification kind of a virtual key (`gateway-key:<id>`).
pub const CHANGE_KIND: &str = "gateway-key";

/// Bytes of a token's secret.
const SECRET_BYTES: usize = 32;

/// A virtual key's token: wiped on drop, never shown by `Debug`.
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token, to hand to the application once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// A token taken apart: the key's id and the secret (borrowed from the request header).
#[derive(Clone, Copy)]
pub struct PresentedToken<'a> {
    /// The virtual key's id.
    pub id: i64,
    secret: &'a str,
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<'a> PresentedToken<'a> {
    /// Reads a token; `None` for anything that is not one.
    pub fn parse(token: &'a str) -> Option<Self> {
        let rest = token.strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('-')?;
        let id: i64 = id.parse().ok().filter(|i| *i > 0)?;
        (secret.len() == 43
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some(PresentedToken { id, secret })
    }
}

/// What a new virtual key grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewVirtualKey {
    /// The user its calls are made and accounted as.
    pub user: String,
    /// The project.
    pub project: Option<String>,
    /// The caller (application).
    pub caller: Option<String>,
    /// The services it may call; `None`: every one.
    pub services: Option<Vec<String>>,
    /// The models it may call (bare or `SERVICE/MODEL`); `None`: every one.
    pub models: Option<Vec<String>>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewVirtualKey {
    /// A key for `user`, granting everything else.
    pub fn for_user(user: impl Into<String>) -> Self {
        NewVirtualKey {
            user: user.into(),
            ..NewVirtualKey::default()
        }
    }
}

/// A stored virtual key (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualKey {
    /// Its id (the number in the token).
    pub id: i64,
    /// The user its calls are made and accounted as.
    pub user: String,
    /// The project.
    pub project: Option<String>,
    /// The caller.
    pub caller: Option<String>,
    /// The services it may call; `None`: every one.
    pub services: Option<Vec<String>>,
    /// The models it may call; `None`: every one.
    pub models: Option<Vec<String>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether its row passed its MAC (a row edited in the database does not, and its key is
    /// refused).
    pub intact: bool,
    token_mac: [u8; 32],
}

impl VirtualKey {
    /// Whether `presented` is this key's token (constant time).
    pub fn matches(&self, keys: &KeyMacs, presented: &PresentedToken<'_>) -> bool {
        let mac = keys.token_mac(presented.id, presented.secret);
        presented.id == self.id && bool::from(mac.ct_eq(&self.token_mac))
    }

    /// Whether it works at `now`: intact, not revoked, not expired.
    pub fn usable_at(&self, now: DateTime<Utc>) -> std::result::Result<(), &'static str> {
        if !self.intact {
            return Err("this virtual key's record fails its integrity check; make a new one");
        }
        if self.revoked_at.is_some() {
            return Err("this virtual key was revoked");
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err("this virtual key has expired");
        }
        Ok(())
    }

    /// Whether it may call `model` of `service`.
    pub fn allows(&self, service: &str, model: &str) -> std::result::Result<(), String> {
        if let Some(services) = &self.services
            && !services.iter().any(|s| s == service)
        {
            return Err(format!(
                "this virtual key may not call service \"{service}\" (it may call: {})",
                services.join(", ")
            ));
        }
        if let Some(models) = &self.models {
            let qualified = format!("{service}/{model}");
            if !models.iter().any(|m| *m == model || *m == qualified) {
                return Err(format!(
                    "this virtual key may not call model \"{model}\" (it may call: {})",
                    models.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// The MAC key of the virtual keys of one store: wiped on drop, never shown by `Debug`.
pub struct KeyMacs(DataKey);

impl fmt::Debug for KeyMacs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMacs([REDACTED])")
    }
}

/// Appends a field with its length, so that no two rows have the same MAC input.
fn field(mac: &mut Hmac<Sha256>, bytes: Option<&[u8]>) {
    match bytes {
        None => mac.update(&[0]),
        Some(b) => {
            mac.update(&[1]);
            mac.update(&u64::try_from(b.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(b);
        }
    }
}

impl KeyMacs {
    /// The MAC key of `manager`'s store (derived from its state key, made on a new store).
    ///
    /// # Errors
    ///
    /// As [`SecureKeyManager::purpose_key`] (an unsealed store: seal it first).
    pub async fn of(manager: &SecureKeyManager) -> Result<Self> {
        manager.purpose_key(PURPOSE).await.map(KeyMacs)
    }

    fn hmac(&self, domain: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac
    }

    fn token_mac(&self, id: i64, secret: &str) -> [u8; 32] {
        let mut mac = self.hmac(b"llm-accounting/gateway/token/v1\0");
        mac.update(&id.to_be_bytes());
        field(&mut mac, Some(secret.as_bytes()));
        mac.finalize().into_bytes().into()
    }

    fn row_mac(&self, row: &Row) -> [u8; 32] {
        let mut mac = self.hmac(b"llm-accounting/gateway/row/v1\0");
        mac.update(&row.id.to_be_bytes());
        field(&mut mac, Some(row.user.as_bytes()));
        field(&mut mac, row.project.as_deref().map(str::as_bytes));
        field(&mut mac, row.caller.as_deref().map(str::as_bytes));
        field(&mut mac, row.services.as_deref().map(str::as_bytes));
        field(&mut mac, row.models.as_deref().map(str::as_bytes));
        mac.update(&row.created_us.to_be_bytes());
        field(
            &mut mac,
            row.expires_us
                .map(i64::to_be_bytes)
                .as_ref()
                .map(|b| &b[..]),
        );
        field(
            &mut mac,
            row.revoked_us
                .map(i64::to_be_bytes)
                .as_ref()
                .map(|b| &b[..]),
        );
        field(&mut mac, Some(row.token_mac.as_bytes()));
        mac.finalize().into_bytes().into()
    }
}

/// A row of `gateway_keys` as stored.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    user: String,
    project: Option<String>,
    caller: Option<String>,
    services: Option<String>,
    models: Option<String>,
    created_us: i64,
    expires_us: Option<i64>,
    revoked_us: Option<i64>,
    token_mac: String,
    row_mac: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// A list as stored: comma-separated (names hold no commas: they are checked on the way in).
fn join(list: Option<&Vec<String>>) -> Option<String> {
    list.map(|l| l.join(","))
}

fn split(s: Option<&str>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// `sql` with `?` placeholders, numbered (`$1`, ...) for PostgreSQL.
fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

const COLUMNS: &str = "id, user_id, project, caller, services, models, created_us, expires_us, \
                       revoked_us, token_mac, row_mac";

fn row_of(r: &sea_orm::QueryResult) -> Result<Row> {
    let get = |e| database_error("read a virtual key", e);
    Ok(Row {
        id: r.try_get("", "id").map_err(get)?,
        user: r.try_get("", "user_id").map_err(get)?,
        project: r.try_get("", "project").map_err(get)?,
        caller: r.try_get("", "caller").map_err(get)?,
        services: r.try_get("", "services").map_err(get)?,
        models: r.try_get("", "models").map_err(get)?,
        created_us: r.try_get("", "created_us").map_err(get)?,
        expires_us: r.try_get("", "expires_us").map_err(get)?,
        revoked_us: r.try_get("", "revoked_us").map_err(get)?,
        token_mac: r.try_get("", "token_mac").map_err(get)?,
        row_mac: r.try_get("", "row_mac").map_err(get)?,
    })
}

/// The virtual keys of one store.
#[derive(Debug)]
pub struct VirtualKeys {
    repo: std::sync::Arc<SeaOrmKeyRepository>,
    macs: KeyMacs,
}

/// A name of a virtual key's list (service or model): not empty, no comma, no control
/// character.
fn check_names(what: &'static str, list: Option<&Vec<String>>) -> Result<()> {
    for name in list.into_iter().flatten() {
        if name.is_empty() || name.contains(',') || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                what,
                format!("{name:?} is not a name (no commas, nothing empty)"),
            ));
        }
    }
    Ok(())
}

impl VirtualKeys {
    /// The virtual keys of `repo`'s store, authenticated under `manager`'s state key.
    ///
    /// # Errors
    ///
    /// As [`KeyMacs::of`].
    pub async fn open(
        repo: std::sync::Arc<SeaOrmKeyRepository>,
        manager: &SecureKeyManager,
    ) -> Result<Self> {
        Ok(VirtualKeys {
            repo,
            macs: KeyMacs::of(manager).await?,
        })
    }

    /// The MAC key (to check presented tokens).
    pub fn macs(&self) -> &KeyMacs {
        &self.macs
    }

    fn backend(&self) -> DbBackend {
        self.repo.connection().get_database_backend()
    }

    fn key_of(&self, row: Row) -> VirtualKey {
        let intact = unhex(&row.row_mac)
            .is_some_and(|stored| bool::from(self.macs.row_mac(&row).ct_eq(&stored)));
        let token_mac = unhex(&row.token_mac).unwrap_or([0; 32]);
        VirtualKey {
            id: row.id,
            user: row.user,
            project: row.project,
            caller: row.caller,
            services: split(row.services.as_deref()),
            models: split(row.models.as_deref()),
            created_at: time(row.created_us),
            expires_at: row.expires_us.map(time),
            revoked_at: row.revoked_us.map(time),
            intact: intact && token_mac != [0; 32],
            token_mac,
        }
    }

    /// Makes a virtual key; returns it and its token (shown once, stored nowhere).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty user, a name with a comma, an expiry in the
    /// past; the database's.
    pub async fn create(&self, new: &NewVirtualKey) -> Result<(VirtualKey, Token)> {
        for (what, v) in [
            ("user", Some(&new.user)),
            ("project", new.project.as_ref()),
            ("caller", new.caller.as_ref()),
        ] {
            if let Some(v) = v {
                llm_accounting_core::validate_name(what, v)?;
            }
        }
        check_names("services", new.services.as_ref())?;
        check_names("models", new.models.as_ref())?;
        if new.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::invalid("expires", "the expiry is in the past"));
        }
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        random_bytes(secret.as_mut_slice())?;
        let secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_slice()));
        let mut row = Row {
            id: 0,
            user: new.user.clone(),
            project: new.project.clone(),
            caller: new.caller.clone(),
            services: join(new.services.as_ref()),
            models: join(new.models.as_ref()),
            created_us: micros(Utc::now()),
            expires_us: new.expires_at.map(micros),
            revoked_us: None,
            token_mac: String::new(),
            row_mac: String::new(),
        };
        let backend = self.backend();
        let txn = self.repo.begin_write_txn("create a virtual key").await?;
        let values = vec![
            Value::from(row.user.clone()),
            Value::from(row.project.clone()),
            Value::from(row.caller.clone()),
            Value::from(row.services.clone()),
            Value::from(row.models.clone()),
            Value::from(row.created_us),
            Value::from(row.expires_us),
            Value::from("0".repeat(64)),
            Value::from("0".repeat(64)),
        ];
        let insert = "INSERT INTO gateway_keys (user_id, project, caller, services, models, \
                      created_us, expires_us, token_mac, row_mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
        row.id = if backend == DbBackend::Postgres {
            let r = txn
                .query_one_raw(statement(
                    backend,
                    &format!("{insert} RETURNING id"),
                    values,
                ))
                .await
                .map_err(|e| database_error("create a virtual key", e))?
                .ok_or_else(|| Error::invalid("virtual key", "the database returned no id"))?;
            r.try_get::<i64>("", "id")
                .map_err(|e| database_error("create a virtual key", e))?
        } else {
            let done = txn
                .execute_raw(statement(backend, insert, values))
                .await
                .map_err(|e| database_error("create a virtual key", e))?;
            i64::try_from(done.last_insert_id()).unwrap_or(0)
        };
        row.token_mac = hex(&self.macs.token_mac(row.id, &secret));
        row.row_mac = hex(&self.macs.row_mac(&row));
        txn.execute_raw(statement(
            backend,
            "UPDATE gateway_keys SET token_mac = ?, row_mac = ? WHERE id = ?",
            vec![
                Value::from(row.token_mac.clone()),
                Value::from(row.row_mac.clone()),
                Value::from(row.id),
            ],
        ))
        .await
        .map_err(|e| database_error("create a virtual key", e))?;
        txn.commit()
            .await
            .map_err(|e| database_error("create a virtual key", e))?;
        let token = Token(Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}-{}",
            row.id,
            secret.as_str()
        )));
        Ok((self.key_of(row), token))
    }

    /// Every virtual key, oldest first.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn list(&self) -> Result<Vec<VirtualKey>> {
        let rows = self
            .repo
            .connection()
            .query_all_raw(statement(
                self.backend(),
                &format!("SELECT {COLUMNS} FROM gateway_keys ORDER BY id"),
                vec![],
            ))
            .await
            .map_err(|e| database_error("list virtual keys", e))?;
        rows.iter()
            .map(|r| row_of(r).map(|row| self.key_of(row)))
            .collect()
    }

    /// The virtual key `id`, if there is one.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn get(&self, id: i64) -> Result<Option<VirtualKey>> {
        let row = self
            .repo
            .connection()
            .query_one_raw(statement(
                self.backend(),
                &format!("SELECT {COLUMNS} FROM gateway_keys WHERE id = ?"),
                vec![Value::from(id)],
            ))
            .await
            .map_err(|e| database_error("read a virtual key", e))?;
        row.map(|r| row_of(&r).map(|row| self.key_of(row)))
            .transpose()
    }

    /// Revokes the virtual key `id` (at once in every gateway on PostgreSQL; within
    /// `gateway.key_refresh_ms` elsewhere). Returns it as revoked, or `None` if there is
    /// none. Revoking a revoked key changes nothing.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn revoke(&self, id: i64) -> Result<Option<VirtualKey>> {
        let backend = self.backend();
        let txn = self.repo.begin_write_txn("revoke a virtual key").await?;
        let row = txn
            .query_one_raw(statement(
                backend,
                &format!("SELECT {COLUMNS} FROM gateway_keys WHERE id = ?"),
                vec![Value::from(id)],
            ))
            .await
            .map_err(|e| database_error("revoke a virtual key", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut row = row_of(&row)?;
        if row.revoked_us.is_none() {
            row.revoked_us = Some(micros(Utc::now()));
            row.row_mac = hex(&self.macs.row_mac(&row));
            txn.execute_raw(statement(
                backend,
                "UPDATE gateway_keys SET revoked_us = ?, row_mac = ? WHERE id = ?",
                vec![
                    Value::from(row.revoked_us),
                    Value::from(row.row_mac.clone()),
                    Value::from(id),
                ],
            ))
            .await
            .map_err(|e| database_error("revoke a virtual key", e))?;
            self.repo
                .publish_in(
                    &txn,
                    &[Change::Other {
                        kind: CHANGE_KIND.to_owned(),
                        id: id.to_string(),
                    }],
                )
                .await?;
        }
        txn.commit()
            .await
            .map_err(|e| database_error("revoke a virtual key", e))?;
        Ok(Some(self.key_of(row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_strictly() {
        let secret = "a".repeat(43);
        let t = format!("llmacc-12-{secret}");
        let p = PresentedToken::parse(&t).expect("token");
        assert_eq!(p.id, 12);
        assert!(!format!("{p:?}").contains(&secret));
        for bad in [
            format!("llmacc-0-{secret}"),
            format!("llmacc--1-{secret}"),
            format!("llmacc-x-{secret}"),
            format!("llmacc-12-{}", "a".repeat(42)),
            format!("llmacc-12-{}!", "a".repeat(42)),
            format!("sk-12-{secret}"),
            "llmacc-12".to_owned(),
        ] {
            assert!(PresentedToken::parse(&bad).is_none(), "{bad}");
        }
        let token = Token(Zeroizing::new(t.clone()));
        assert_eq!(format!("{token:?}"), "Token([REDACTED])");
        assert_eq!(unhex(&hex(&[7u8; 32])), Some([7u8; 32]));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn lists_limit_services_and_models() {
        let key = VirtualKey {
            id: 1,
            user: "alice".into(),
            project: None,
            caller: None,
            services: Some(vec!["openai".into(), "mistral".into()]),
            models: Some(vec!["gpt-4o-mini".into(), "mistral/large".into()]),
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
            intact: true,
            token_mac: [0; 32],
        };
        assert!(key.allows("openai", "gpt-4o-mini").is_ok());
        assert!(key.allows("mistral", "large").is_ok());
        assert!(
            key.allows("openai", "large").is_err(),
            "qualified by service"
        );
        assert!(key.allows("anthropic", "gpt-4o-mini").is_err());
        assert!(key.usable_at(Utc::now()).is_ok());
        let expired = VirtualKey {
            expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..key.clone()
        };
        assert_eq!(
            expired.usable_at(Utc::now()),
            Err("this virtual key has expired")
        );
        let edited = VirtualKey {
            intact: false,
            ..key
        };
        assert!(edited.usable_at(Utc::now()).is_err());
    }
}
