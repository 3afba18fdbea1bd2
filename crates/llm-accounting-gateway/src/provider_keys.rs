//! Which stored provider key serves a virtual key's call: the most specific of the service's
//! keys among the virtual key's user and project, its project alone, and the service's key
//! without user and project. The choice is remembered for `gateway.key_refresh_ms`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llm_accounting_core::{Error, ErrorKind, KeyIdentity, Result, SecureKeyManager};

/// (service, user, project).
type Scope = (String, String, Option<String>);

/// Remembers which identity serves each scope.
#[derive(Debug)]
pub struct ProviderKeys {
    ttl: Duration,
    chosen: Mutex<HashMap<Scope, (KeyIdentity, Instant)>>,
}

impl ProviderKeys {
    /// Choices kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        ProviderKeys {
            ttl,
            chosen: Mutex::new(HashMap::new()),
        }
    }

    /// The identities to try for `service`, `user` and `project`, most specific first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a name an identity cannot hold.
    pub fn candidates(
        service: &str,
        user: &str,
        project: Option<&str>,
    ) -> Result<Vec<KeyIdentity>> {
        let base = KeyIdentity::new(service)?;
        let mut out = vec![base.clone().with_user(Some(user))?.with_project(project)?];
        if project.is_some() {
            out.push(base.clone().with_project(project)?);
        }
        out.push(base);
        Ok(out)
    }

    /// The identity of the key that serves `service` for `user` and `project`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the service when none of the candidates has a key; the
    /// manager's other errors.
    pub async fn resolve(
        &self,
        manager: &SecureKeyManager,
        service: &str,
        user: &str,
        project: Option<&str>,
    ) -> Result<KeyIdentity> {
        let scope: Scope = (
            service.to_owned(),
            user.to_owned(),
            project.map(str::to_owned),
        );
        if let Some((identity, at)) = self
            .chosen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&scope)
            && at.elapsed() < self.ttl
        {
            return Ok(identity.clone());
        }
        let candidates = Self::candidates(service, user, project)?;
        let mut last = None;
        for identity in candidates {
            match manager.get_versioned(&identity).await {
                Ok(_) => {
                    self.chosen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(scope, (identity.clone(), Instant::now()));
                    return Ok(identity);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound {
            identity: service.to_owned(),
        }))
    }

    /// Forgets the choice for a scope (its key was deleted).
    pub fn forget(&self, service: &str, user: &str, project: Option<&str>) {
        self.chosen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(
                service.to_owned(),
                user.to_owned(),
                project.map(str::to_owned),
            ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_from_most_to_least_specific() {
        let c = ProviderKeys::candidates("openai", "alice", Some("p1")).expect("names");
        let printed: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(printed.len(), 3, "{printed:?}");
        assert_eq!(c[0].user(), Some("alice"));
        assert_eq!(c[0].project(), Some("p1"));
        assert_eq!((c[1].user(), c[1].project()), (None, Some("p1")));
        assert_eq!((c[2].user(), c[2].project()), (None, None));
        let c = ProviderKeys::candidates("openai", "alice", None).expect("names");
        assert_eq!(c.len(), 2);
    }
}
