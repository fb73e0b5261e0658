//! OpenAPI: the security schemes in `components.securitySchemes` and the
//! per-operation `security` requirements, as FastAPI emits them
//! (docs/fastapi-compat.md lists the entries), through utoipa.
//!
//! Operations name their schemes in utoipa's `#[utoipa::path(security(...))]`
//! by FastAPI's class names (`APIKeyHeader`, `HTTPBearer`,
//! `OAuth2PasswordBearer`, ...), or with [`requirement`]. Then
//! [`Portcullis::document`] registers exactly the schemes the operations
//! use, described from the handle's settings (header name, token URL,
//! scopes), and refuses a name it does not know or a scope the token
//! endpoint does not offer — so the document cannot drift from the code.
//!
//! ```
//! # async fn f() {
//! use portcullis::{Portcullis, schemes::{ApiKeyHeader, OAuth2PasswordBearer}};
//! use portcullis::openapi::requirement;
//! use utoipa::openapi::{OpenApiBuilder, PathsBuilder, PathItem, HttpMethod};
//! use utoipa::openapi::path::OperationBuilder;
//!
//! portcullis::scopes!(Me = ["me"]);
//! let pc = Portcullis::builder()
//!     .token_url("token", &[("me", "Read information about the current user.")])
//!     .build().await.unwrap();
//! let op = OperationBuilder::new()
//!     .security(requirement::<OAuth2PasswordBearer, Me>())
//!     .build();
//! let mut doc = OpenApiBuilder::new()
//!     .paths(PathsBuilder::new().path("/users/me", PathItem::new(HttpMethod::Get, op)))
//!     .build();
//! pc.document(&mut doc).unwrap();
//! let json = serde_json::to_value(&doc).unwrap();
//! assert_eq!(
//!     json["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"],
//!     "token"
//! );
//! # }
//! ```

use crate::http::schemes::{
    ApiKeyCookie, ApiKeyHeader, ApiKeyQuery, HttpBasic, HttpBearer, OAuth2PasswordBearer,
    SecurityScheme, Session,
};
use crate::http::verified::ScopeList;
use crate::service::Portcullis;
use portcullis_core::Scheme;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, Http, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes,
    SecurityRequirement, SecurityScheme as Doc,
};

/// Why [`Portcullis::document`] refused a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenApiError {
    /// An operation names a scheme Portcullis does not provide.
    #[error("{operation}: unknown security scheme {name:?}")]
    UnknownScheme {
        /// `GET /path`.
        operation: String,
        /// The name.
        name: String,
    },
    /// An operation demands a scope the token endpoint does not offer.
    #[error("{operation}: scope {scope:?} is not one the token URL offers")]
    UnknownScope {
        /// `GET /path`.
        operation: String,
        /// The scope.
        scope: String,
    },
    /// Scopes on a scheme that has none (API keys, Basic).
    #[error("{operation}: {name} takes no scopes in OpenAPI")]
    ScopesNotAllowed {
        /// `GET /path`.
        operation: String,
        /// The scheme's name.
        name: String,
    },
}

/// The security requirement of a handler taking `Verified<S, Sc>`: one
/// object naming `S` with `Sc`'s scopes (OpenAPI lists scopes only for
/// OAuth2 schemes; others get an empty list).
///
/// ```
/// use portcullis::openapi::requirement;
/// use portcullis::schemes::ApiKeyHeader;
/// let r = requirement::<ApiKeyHeader, ()>();
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"APIKeyHeader":[]}"#);
/// ```
pub fn requirement<S: SecurityScheme, Sc: ScopeList>() -> SecurityRequirement {
    SecurityRequirement::new(S::NAME, Sc::SCOPES.iter().copied())
}

const NAMES: [(&str, Scheme); 7] = [
    (ApiKeyHeader::NAME, Scheme::ApiKeyHeader),
    (ApiKeyQuery::NAME, Scheme::ApiKeyQuery),
    (ApiKeyCookie::NAME, Scheme::ApiKeyCookie),
    (HttpBearer::NAME, Scheme::Bearer),
    (HttpBasic::NAME, Scheme::Basic),
    (OAuth2PasswordBearer::NAME, Scheme::Bearer),
    (Session::NAME, Scheme::Session),
];

impl Portcullis {
    /// The scheme object for FastAPI class name `name`, as FastAPI writes
    /// it: `{"type":"apiKey","name":"X-API-Key","in":"header"}`, ...
    pub fn security_scheme(&self, name: &str) -> Option<Doc> {
        let (_, scheme) = NAMES.iter().find(|(n, _)| *n == name)?;
        let names = self.names();
        let docs = self.docs();
        let description = docs
            .descriptions
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, d)| d.clone());
        let key = |n: &str| match &description {
            Some(d) => ApiKeyValue::with_description(n.to_owned(), d.clone()),
            None => ApiKeyValue::new(n),
        };
        Some(match name {
            "APIKeyHeader" => Doc::ApiKey(ApiKey::Header(key(docs
                .header_name
                .as_deref()
                .unwrap_or("X-API-Key")))),
            "APIKeyQuery" => Doc::ApiKey(ApiKey::Query(key(&names.query))),
            "APIKeyCookie" => Doc::ApiKey(ApiKey::Cookie(key(&names.cookie))),
            "SessionCookie" => Doc::ApiKey(ApiKey::Cookie(key(&names.session_cookie))),
            "HTTPBasic" => Doc::Http(http(HttpAuthScheme::Basic, description)),
            "HTTPBearer" => Doc::Http(http(HttpAuthScheme::Bearer, description)),
            _ => {
                let url = docs.token_url.clone().unwrap_or_else(|| "token".to_owned());
                let scopes: Scopes = docs
                    .scopes
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                let flow = Flow::Password(Password::new(url, scopes));
                match description {
                    Some(d) => Doc::OAuth2(OAuth2::with_description([flow], d)),
                    None => Doc::OAuth2(OAuth2::new([flow])),
                }
            }
        })
    }

    /// Registers in `doc.components.securitySchemes` every scheme its
    /// operations name, and checks each requirement: the name must be one
    /// Portcullis provides, and OAuth2 scopes must be offered by the token
    /// URL (when scopes were given to the builder).
    pub fn document(&self, doc: &mut OpenApi) -> Result<(), OpenApiError> {
        let mut used: Vec<String> = Vec::new();
        let offered = &self.docs().scopes;
        for (path, item) in &doc.paths.paths {
            let ops = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("OPTIONS", &item.options),
                ("HEAD", &item.head),
                ("PATCH", &item.patch),
                ("TRACE", &item.trace),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let operation = format!("{method} {path}");
                let v = serde_json::to_value(&op.security).unwrap_or_default();
                let reqs = v.as_array().cloned().unwrap_or_default();
                for r in reqs {
                    let Some(obj) = r.as_object() else { continue };
                    for (name, scopes) in obj {
                        if !NAMES.iter().any(|(n, _)| n == name) {
                            return Err(OpenApiError::UnknownScheme {
                                operation,
                                name: name.clone(),
                            });
                        }
                        let scopes: Vec<&str> = scopes
                            .as_array()
                            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                            .unwrap_or_default();
                        // Scopes belong to the schemes whose credentials
                        // carry them: OAuth2 and Bearer tokens. A key or a
                        // password has none to list.
                        let scoped = name == OAuth2PasswordBearer::NAME || name == HttpBearer::NAME;
                        if !scoped && !scopes.is_empty() {
                            return Err(OpenApiError::ScopesNotAllowed {
                                operation,
                                name: name.clone(),
                            });
                        }
                        if name == OAuth2PasswordBearer::NAME
                            && !offered.is_empty()
                            && let Some(s) = scopes
                                .iter()
                                .find(|s| !offered.iter().any(|(o, _)| o == *s))
                        {
                            return Err(OpenApiError::UnknownScope {
                                operation,
                                scope: (*s).to_owned(),
                            });
                        }
                        if !used.contains(name) {
                            used.push(name.clone());
                        }
                    }
                }
            }
        }
        if used.is_empty() {
            return Ok(());
        }
        let components = doc.components.get_or_insert_with(Default::default);
        for name in used {
            if let Some(s) = self.security_scheme(&name) {
                components.security_schemes.insert(name, s);
            }
        }
        Ok(())
    }
}

fn http(scheme: HttpAuthScheme, description: Option<String>) -> Http {
    HttpBuilder::new()
        .scheme(scheme)
        .description(description)
        .build()
}
