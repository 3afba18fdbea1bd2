//! A loopback fake of the Azure Key Vault data plane, for tests (feature `test-support`).
//!
//! It implements what the provider uses, as documented: the 401 challenge
//! (`WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"`), the Entra
//! ID client-credentials token request, `wrapkey` / `unwrapkey` with real RSA-OAEP-256 (SHA-256)
//! under numbered key versions, disabled versions (403), unknown keys (404) and canned answers
//! (429, 5xx, 403). The SDK refuses to send a token over plain http, so clients reach the fake
//! through [`crate::EndpointOverride`] (`with_endpoint`), which rewrites requests below the SDK.
//!
//! RSA keys are 1024 bits to keep key generation fast in debug builds (Key Vault's are 2048+).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

use crate::{AzureCredentialKind, AzureKeyVaultProvider, AzureKeyVaultProviderBuilder};

/// The vault the fake pretends to be.
pub const FAKE_VAULT_URL: &str = "https://llm-accounting-fake.vault.azure.net";
/// The tenant of the fake's service principal.
pub const FAKE_TENANT_ID: &str = "00000000-0000-0000-0000-00000000fake";
/// The fake's client id.
pub const FAKE_CLIENT_ID: &str = "11111111-1111-1111-1111-11111111fake";
/// The fake's client secret (obviously fake).
pub const FAKE_CLIENT_SECRET: &str = "fake-client-secret-FAKE-0000";

struct Version {
    id: String,
    key: RsaPrivateKey,
    enabled: bool,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Vec<Version>>,
    tokens: Vec<String>,
    script: VecDeque<(u16, String)>,
    requests: Vec<String>,
}

/// A running fake Key Vault on a loopback port (stops with the test process).
#[derive(Clone)]
pub struct FakeKeyVault {
    url: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKeyVault")
            .field("url", &self.url)
            .finish()
    }
}

impl FakeKeyVault {
    /// Starts the fake.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        FakeKeyVault { url, state }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fake's base URL (`http://127.0.0.1:PORT`), for `with_endpoint` or the CLI's KMS
    /// endpoint setting.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates a new version of RSA key `name` (creating the key if needed) and makes it the
    /// current one; returns its versioned key id.
    ///
    /// # Panics
    /// If RSA key generation fails.
    pub fn create_key_version(&self, name: &str) -> String {
        let key = RsaPrivateKey::new(&mut OsRng, 1024).expect("RSA key generation");
        let mut raw = [0u8; 16];
        OsRng.fill_bytes(&mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.state()
            .keys
            .entry(name.to_owned())
            .or_default()
            .push(Version {
                id: id.clone(),
                key,
                enabled: true,
            });
        format!("{FAKE_VAULT_URL}/keys/{name}/{id}")
    }

    /// The unversioned key id of `name`.
    pub fn key_id(name: &str) -> String {
        format!("{FAKE_VAULT_URL}/keys/{name}")
    }

    /// Enables or disables one version of key `name`.
    pub fn set_enabled(&self, name: &str, version: &str, enabled: bool) {
        if let Some(v) = self
            .state()
            .keys
            .get_mut(name)
            .and_then(|vs| vs.iter_mut().find(|v| v.id == version))
        {
            v.enabled = enabled;
        }
    }

    /// The next answer is this status and JSON body, whatever the request (after the
    /// authentication handshake).
    pub fn push_response(&self, status: u16, body: &str) {
        self.state().script.push_back((status, body.to_owned()));
    }

    /// `METHOD path` of every request so far (token requests included).
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The fake service principal, as a credential.
    pub fn credential() -> AzureCredentialKind {
        AzureCredentialKind::ClientSecret {
            tenant_id: FAKE_TENANT_ID.to_owned(),
            client_id: FAKE_CLIENT_ID.to_owned(),
            client_secret: FAKE_CLIENT_SECRET.to_owned().into(),
        }
    }

    /// A builder for a provider using key `key_id` through this fake.
    pub fn builder(&self, key_id: &str) -> AzureKeyVaultProviderBuilder {
        AzureKeyVaultProvider::builder()
            .with_key_id(key_id)
            .with_endpoint(&self.url)
            .with_credential(Self::credential())
    }
}

/// A Key Vault error body.
pub fn error_body(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(s))
        .ok()
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (status, extra, answer) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        handle(&method, &target, &headers, &body, &mut s)
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         {extra}connection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

fn handle(
    method: &str,
    target: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    s: &mut State,
) -> (u16, String, String) {
    let path = target.split('?').next().unwrap_or_default();
    s.requests.push(format!("{method} {path}"));
    let plain = |status: u16, body: String| (status, String::new(), body);

    // Entra ID token endpoint (client credentials).
    if path == format!("/{FAKE_TENANT_ID}/oauth2/v2.0/token") {
        let form = String::from_utf8_lossy(body);
        let field = |name: &str| {
            form.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_owned()
        };
        if field("client_id") != FAKE_CLIENT_ID || field("client_secret") != FAKE_CLIENT_SECRET {
            return plain(
                401,
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}).to_string(),
            );
        }
        let token = format!("fake-access-token-{}", s.tokens.len());
        s.tokens.push(token.clone());
        return plain(
            200,
            json!({"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}).to_string(),
        );
    }

    // Key Vault: the challenge first.
    let authorized = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| s.tokens.iter().any(|k| k == t));
    if !authorized {
        let challenge = format!(
            "www-authenticate: Bearer authorization=\"https://login.microsoftonline.com/{FAKE_TENANT_ID}\", resource=\"https://vault.azure.net\"\r\n"
        );
        return (
            401,
            challenge,
            error_body(
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            ),
        );
    }
    if let Some((status, answer)) = s.script.pop_front() {
        return plain(status, answer);
    }
    let Some(rest) = path.strip_prefix("/keys/") else {
        return plain(404, error_body("NotFound", "no such route"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (name, version, op) = match segments.as_slice() {
        [name, op] => (*name, "", *op),
        [name, version, op] => (*name, *version, *op),
        _ => return plain(404, error_body("NotFound", "no such route")),
    };
    let params: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if params.get("alg").and_then(Value::as_str) != Some("RSA-OAEP-256") {
        return plain(
            400,
            error_body("BadParameter", "Invalid algorithm: only RSA-OAEP-256 here."),
        );
    }
    let Some(value) = params
        .get("value")
        .and_then(Value::as_str)
        .and_then(b64_decode)
    else {
        return plain(
            400,
            error_body("BadParameter", "Property 'value' is required."),
        );
    };
    let Some(versions) = s.keys.get(name) else {
        return plain(
            404,
            error_body(
                "KeyNotFound",
                &format!("A key with (name/id) {name} was not found in this key vault."),
            ),
        );
    };
    let found = if version.is_empty() {
        versions.last()
    } else {
        versions.iter().find(|v| v.id == version)
    };
    let Some(v) = found else {
        return plain(
            404,
            error_body(
                "KeyNotFound",
                &format!("A key with (name/id) {name}/{version} was not found in this key vault."),
            ),
        );
    };
    if !v.enabled {
        return plain(
            403,
            json!({"error": {"code": "Forbidden", "message": format!("Operation {op} is not allowed on a disabled key."), "innererror": {"code": "KeyDisabled"}}}).to_string(),
        );
    }
    let kid = format!("{FAKE_VAULT_URL}/keys/{name}/{}", v.id);
    let result = match op {
        "wrapkey" => RsaPublicKey::from(&v.key)
            .encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), &value)
            .map_err(|_| "The parameter is incorrect."),
        "unwrapkey" => v
            .key
            .decrypt(Oaep::new::<sha2::Sha256>(), &value)
            .map_err(|_| "The parameter is incorrect."),
        _ => return plain(404, error_body("NotFound", "no such operation")),
    };
    match result {
        Ok(out) => plain(
            200,
            json!({"kid": kid, "value": URL_SAFE_NO_PAD.encode(out)}).to_string(),
        ),
        Err(m) => plain(400, error_body("BadParameter", m)),
    }
}
