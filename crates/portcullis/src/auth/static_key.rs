//! A fixed API key from the environment: the seeds' simplest case
//! (`API_KEY = os.environ["API_KEY"]`), checked the way managed keys are.
//!
//! Only the key's SHA-256 is kept, and a presented value is compared with
//! every configured key in constant time, so neither the key's bytes nor
//! which key matched shows in timing, logs or `Debug` output.

use portcullis_core::{KeyHash, Principal, PrincipalKind, Scopes, Secret};

/// Fewest characters a static key may have: shorter ones can be guessed.
pub const MIN_LEN: usize = 12;

/// A static key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticKeyError {
    /// Neither the environment variable nor its `_FILE` variant is set.
    #[error("environment variable {0} (or {0}_FILE) is not set")]
    Missing(String),
    /// The variable or its file could not be read (see
    /// [`crate::secret_env`]).
    #[error(transparent)]
    Source(crate::secret_env::SecretEnvError),
    /// Too short, or holds spaces or control characters.
    #[error(
        "{0}: a static API key needs at least 12 characters, with no spaces or control characters"
    )]
    Weak(String),
}

/// One static key: its hash and the principal it stands for.
#[derive(Clone)]
pub struct StaticKey {
    hash: KeyHash,
    principal: Principal,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("id", &self.principal.credential_id)
            .field("owner", &self.principal.subject)
            .finish_non_exhaustive()
    }
}

impl StaticKey {
    /// A static key owned by `static`, with id `static` and no scopes.
    ///
    /// ```
    /// use portcullis::static_key::StaticKey;
    /// use portcullis::core::Secret;
    /// let k = StaticKey::new(Secret::new("correct-horse-battery".to_owned())).unwrap();
    /// assert!(k.matches("correct-horse-battery"));
    /// assert!(StaticKey::new(Secret::new("short".to_owned())).is_err());
    /// ```
    pub fn new(key: Secret<String>) -> Result<StaticKey, StaticKeyError> {
        let k = key.expose();
        if k.chars().count() < MIN_LEN || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StaticKeyError::Weak("the static key".into()));
        }
        Ok(StaticKey {
            hash: KeyHash::of(k),
            principal: Principal {
                subject: "static".into(),
                kind: PrincipalKind::ApiKey,
                scopes: Scopes::empty(),
                credential_id: "static".into(),
                rate_limit: None,
                issuer: None,
            },
        })
    }

    /// Reads the key from environment variable `var`, or from the file
    /// `var_FILE` names (mode 600 or stricter; one trailing newline
    /// dropped; see [`crate::secret_env`]). Errors name the variable,
    /// never its value.
    ///
    /// ```
    /// use portcullis::static_key::StaticKey;
    /// // SAFETY of the example: nothing else reads this variable.
    /// # unsafe { std::env::set_var("DOC_STATIC_KEY", "my-secret-key-123") };
    /// let k = StaticKey::from_env("DOC_STATIC_KEY").unwrap();
    /// assert!(k.matches("my-secret-key-123"));
    /// assert!(StaticKey::from_env("DOC_NOT_SET").is_err());
    /// ```
    pub fn from_env(var: &str) -> Result<StaticKey, StaticKeyError> {
        let v = crate::secret_env::from_process(var)
            .map_err(StaticKeyError::Source)?
            .ok_or_else(|| StaticKeyError::Missing(var.to_owned()))?;
        StaticKey::new(v).map_err(|_| StaticKeyError::Weak(var.to_owned()))
    }

    /// Names the key's owner (the principal's subject).
    ///
    /// ```
    /// # use portcullis::static_key::StaticKey;
    /// # use portcullis::core::Secret;
    /// let k = StaticKey::new(Secret::new("correct-horse-battery".into())).unwrap().owner("demo");
    /// assert_eq!(k.principal().subject, "demo");
    /// ```
    pub fn owner(mut self, owner: impl Into<String>) -> StaticKey {
        self.principal.subject = owner.into().into();
        self
    }

    /// Names the key in logs (the principal's credential id).
    ///
    /// ```
    /// # use portcullis::static_key::StaticKey;
    /// # use portcullis::core::Secret;
    /// let k = StaticKey::new(Secret::new("correct-horse-battery".into())).unwrap().id("env-key");
    /// assert_eq!(k.principal().credential_id, "env-key");
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> StaticKey {
        self.principal.credential_id = id.into().into();
        self
    }

    /// Grants the key scopes.
    ///
    /// ```
    /// # use portcullis::static_key::StaticKey;
    /// # use portcullis::core::{Scopes, Secret};
    /// let k = StaticKey::new(Secret::new("correct-horse-battery".into())).unwrap()
    ///     .scopes(Scopes::parse("read write").unwrap());
    /// assert!(k.principal().scopes.contains("write"));
    /// ```
    pub fn scopes(mut self, scopes: Scopes) -> StaticKey {
        self.principal.scopes = scopes;
        self
    }

    /// The principal a match stands for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether `presented` is this key (constant time in the key's bytes).
    pub fn matches(&self, presented: &str) -> bool {
        KeyHash::of(presented).ct_eq(&self.hash)
    }
}

/// The key among `keys` that `presented` is, comparing with every one so
/// the time taken does not tell which matched.
pub fn find<'a>(keys: &'a [StaticKey], presented: &str) -> Option<&'a StaticKey> {
    if keys.is_empty() {
        return None;
    }
    let h = KeyHash::of(presented);
    let mut found = None;
    for k in keys {
        if h.ct_eq(&k.hash) && found.is_none() {
            found = Some(k);
        }
    }
    found
}
