//! The admin API for users and OAuth2 clients (`/admin/v1/users`,
//! `/admin/v1/clients`), merged into [`crate::admin::router`] behind the
//! same admin check. Without an identity service every route answers 404.

use crate::admin::reply::{Answer, Refused, invalid, json, no_content, problem};
use crate::admin::request::{actor, checked_scopes, read_json};
use crate::admin::route::{AdminState, Route};
use crate::admin::rules;
use crate::admin::schemas::{Guarded, JsonBody};
use crate::auth::identity::{Identity, IdentityError};
use crate::auth::password::PasswordError;
use crate::auth::specs::{ScopeList, client_created_json, split_list};
use crate::store::StoreError;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::on;
use http::{Method, StatusCode};
use portcullis_core::{ErrorCode, Problem, Secret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The user and client routes. Each handler carries its
/// `#[utoipa::path]`.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/admin/v1/users",
        handler: |m| on(m, list_users),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/users",
        handler: |m| on(m, create_user),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/users/{name}",
        handler: |m| on(m, show_user),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/users/{name}/disable",
        handler: |m| on(m, disable_user),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/users/{name}/enable",
        handler: |m| on(m, enable_user),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/users/{name}/password",
        handler: |m| on(m, set_password),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/clients",
        handler: |m| on(m, list_clients),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/clients",
        handler: |m| on(m, create_client),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/clients/{id}/revoke",
        handler: |m| on(m, revoke_client),
    },
];

/// What an identity error answers. `what` names the missing record for a
/// 404 ("no user named …").
fn identity_problem(e: &IdentityError, what: &str) -> Problem {
    match e {
        IdentityError::Invalid(m) => Problem::new(ErrorCode::ValidationFailed).detail(m.clone()),
        IdentityError::Password(p @ (PasswordError::TooShort | PasswordError::TooLong)) => {
            Problem::new(ErrorCode::ValidationFailed).detail(p.to_string())
        }
        IdentityError::Store(StoreError::NotFound) => {
            Problem::new(ErrorCode::ResourceNotFound).detail(what.to_owned())
        }
        IdentityError::Store(StoreError::Conflict(m)) => {
            Problem::new(ErrorCode::Conflict).detail(*m)
        }
        IdentityError::Store(err) => {
            tracing::error!(error = %err, "store error in admin API");
            Problem::new(ErrorCode::StoreUnavailable)
        }
        IdentityError::Password(err) => {
            tracing::error!(error = %err, "password error in admin API");
            Problem::new(ErrorCode::Internal)
        }
        IdentityError::Random => Problem::new(ErrorCode::Internal),
    }
}

fn err(e: &IdentityError, what: &str) -> Response {
    problem(identity_problem(e, what))
}

fn no_user(name: &str) -> String {
    format!(
        "no user named {:?}",
        name.chars().take(64).collect::<String>()
    )
}

/// A body's scopes by the admin API's rules; none when left out.
fn scopes(list: Option<ScopeList>) -> Result<portcullis_core::Scopes, Refused> {
    Ok(list
        .map(checked_scopes)
        .transpose()
        .map_err(invalid)?
        .unwrap_or_default())
}

fn no_client(id: &str) -> String {
    format!(
        "no client with id {:?}",
        id.chars().take(64).collect::<String>()
    )
}

/// The identity service, or the 404 of a gateway without users and
/// clients.
fn identity(st: &AdminState) -> Result<&Identity, Refused> {
    st.identity.as_deref().ok_or_else(|| {
        Refused::from(problem(
            Problem::new(ErrorCode::ResourceNotFound)
                .detail("users and clients are not configured on this gateway"),
        ))
    })
}

// ---- users -----------------------------------------------------------

/// Every user.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserList {
    /// The users.
    #[schema(value_type = Vec<crate::admin::schemas::User>)]
    users: Vec<crate::store::identity::UserRecord>,
}

/// List users
#[utoipa::path(
    get,
    path = "/admin/v1/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user", body = UserList),
        (status = 404, description = "Users and clients are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_users(State(st): State<AdminState>) -> Answer {
    let users = identity(&st)?
        .list_users()
        .await
        .map_err(|e| err(&e, "no users"))?;
    Ok(json(StatusCode::OK, &UserList { users }))
}

fn username_schema() -> utoipa::openapi::Schema {
    rules::USERNAME.schema(
        false,
        "Login name: 1-64 characters, no colon, control characters or surrounding spaces.",
    )
}

fn password_schema() -> utoipa::openapi::Schema {
    let mut s = rules::PASSWORD.schema(
        false,
        "The password, 8-1024 characters, stored as an Argon2id hash.",
    );
    if let utoipa::openapi::Schema::Object(o) = &mut s {
        o.format = Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Password,
        ));
    }
    s
}

/// A user to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUserBody {
    /// Login name.
    #[schema(schema_with = username_schema)]
    username: String,
    /// The password.
    #[schema(schema_with = password_schema)]
    password: String,
    /// Scopes.
    scopes: Option<ScopeList>,
}

/// Add a user
#[utoipa::path(
    post,
    path = "/admin/v1/users",
    tag = "users",
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "The new user", body = crate::admin::schemas::User),
        (status = 404, description = "Users and clients are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A user with that name exists (`conflict`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        JsonBody,
        (status = 500, description = "The password could not be hashed (`internal_error`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn create_user(State(st): State<AdminState>, req: Request) -> Answer {
    let id = identity(&st)?;
    let actor = actor(&req);
    let b: CreateUserBody = read_json(req, false).await?;
    rules::USERNAME
        .check("username", &b.username)
        .map_err(invalid)?;
    let password = Secret::new(b.password);
    let scopes = scopes(b.scopes)?;
    let r = id
        .add_user(&b.username, &password, scopes, &actor)
        .await
        .map_err(|e| err(&e, &no_user(&b.username)))?;
    Ok(json(StatusCode::CREATED, &r))
}

/// Show a user
#[utoipa::path(
    get,
    path = "/admin/v1/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "The user's login name")),
    responses(
        (status = 200, description = "The user", body = crate::admin::schemas::User),
        (status = 404, description = "No user with that name, or users are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn show_user(State(st): State<AdminState>, Path(name): Path<String>) -> Answer {
    let r = identity(&st)?
        .store()
        .get_user(&name)
        .await
        .map_err(|e| err(&IdentityError::Store(e), &no_user(&name)))?;
    Ok(json(StatusCode::OK, &r))
}

async fn set_disabled(st: &AdminState, name: &str, actor: &str, disabled: bool) -> Answer {
    let r = identity(st)?
        .set_user_disabled(name, disabled, actor)
        .await
        .map_err(|e| err(&e, &no_user(name)))?;
    Ok(json(StatusCode::OK, &r))
}

/// Disable a user
///
/// Ends the user's sessions and tokens at once.
#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/disable",
    tag = "users",
    params(("name" = String, Path, description = "The user's login name")),
    responses(
        (status = 200, description = "The user", body = crate::admin::schemas::User),
        (status = 404, description = "No user with that name, or users are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn disable_user(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    req: Request,
) -> Answer {
    set_disabled(&st, &name, &actor(&req), true).await
}

/// Enable a user
#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/enable",
    tag = "users",
    params(("name" = String, Path, description = "The user's login name")),
    responses(
        (status = 200, description = "The user", body = crate::admin::schemas::User),
        (status = 404, description = "No user with that name, or users are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn enable_user(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    req: Request,
) -> Answer {
    set_disabled(&st, &name, &actor(&req), false).await
}

/// A new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    /// The password.
    #[schema(schema_with = password_schema)]
    password: String,
}

/// Set a user's password
///
/// Ends the user's sessions and tokens.
#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/password",
    tag = "users",
    params(("name" = String, Path, description = "The user's login name")),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "The password is set"),
        (status = 404, description = "No user with that name, or users are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        JsonBody,
        (status = 500, description = "The password could not be hashed (`internal_error`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn set_password(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    req: Request,
) -> Answer {
    let id = identity(&st)?;
    let actor = actor(&req);
    let b: PasswordBody = read_json(req, false).await?;
    let password = Secret::new(b.password);
    id.set_password(&name, &password, &actor)
        .await
        .map_err(|e| err(&e, &no_user(&name)))?;
    Ok(no_content())
}

// ---- clients ---------------------------------------------------------

/// Every OAuth2 client.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClientList {
    /// The clients.
    #[schema(value_type = Vec<crate::admin::schemas::Client>)]
    clients: Vec<crate::store::identity::ClientRecord>,
}

/// List OAuth2 clients
#[utoipa::path(
    get,
    path = "/admin/v1/clients",
    tag = "clients",
    responses(
        (status = 200, description = "Every client", body = ClientList),
        (status = 404, description = "Users and clients are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_clients(State(st): State<AdminState>) -> Answer {
    let clients = identity(&st)?
        .list_clients()
        .await
        .map_err(|e| err(&e, "no clients"))?;
    Ok(json(StatusCode::OK, &ClientList { clients }))
}

/// Grant types: one string, space- or comma-separated, or a list. Its
/// schema is [`rules::grant_list_schema`].
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum GrantList {
    /// Space- or comma-separated.
    One(String),
    /// One grant type per item.
    Many(Vec<String>),
}

impl utoipa::PartialSchema for GrantList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        rules::grant_list_schema()
    }
}

impl ToSchema for GrantList {}

fn client_name_schema() -> utoipa::openapi::Schema {
    rules::LABEL.schema(
        false,
        "Name: 1-128 characters, not only spaces, no control characters.",
    )
}

/// An OAuth2 client to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateClientBody {
    /// Name.
    #[schema(schema_with = client_name_schema)]
    name: String,
    /// The scopes the client may be granted.
    scopes: Option<ScopeList>,
    /// Grant types; default `client_credentials refresh_token`.
    grants: Option<GrantList>,
}

/// Add an OAuth2 client
///
/// The answer holds the client secret, shown this once; only its SHA-256
/// is stored.
#[utoipa::path(
    post,
    path = "/admin/v1/clients",
    tag = "clients",
    request_body = CreateClientBody,
    responses(
        (status = 201, description = "The client's record and secret, shown once", body = crate::admin::schemas::NewClient),
        (status = 404, description = "Users and clients are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        JsonBody,
        (status = 500, description = "No randomness for the id or secret (`internal_error`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn create_client(State(st): State<AdminState>, req: Request) -> Answer {
    let id = identity(&st)?;
    let actor = actor(&req);
    let b: CreateClientBody = read_json(req, false).await?;
    rules::LABEL.check("name", &b.name).map_err(invalid)?;
    let scopes = scopes(b.scopes)?;
    let grants = match b.grants {
        None => Vec::new(),
        Some(GrantList::One(s)) => {
            rules::GRANT_LIST.check("grants", &s).map_err(invalid)?;
            split_list(&s)
        }
        // Each item is checked by `add_client`, against the same list.
        Some(GrantList::Many(v)) => v,
    };
    let c = id
        .add_client(&b.name, scopes, &grants, &actor)
        .await
        .map_err(|e| err(&e, "no such client"))?;
    Ok(json(StatusCode::CREATED, &client_created_json(&c)))
}

/// Revoke an OAuth2 client
///
/// Its refresh tokens are revoked and its access tokens stop working.
#[utoipa::path(
    post,
    path = "/admin/v1/clients/{id}/revoke",
    tag = "clients",
    params(("id" = String, Path, description = "The client's id (`cl_…`)")),
    responses(
        (status = 200, description = "The revoked client's record", body = crate::admin::schemas::Client),
        (status = 404, description = "No client with that id, or clients are not configured on this gateway (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The client is revoked already (`conflict`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn revoke_client(
    State(st): State<AdminState>,
    Path(client_id): Path<String>,
    req: Request,
) -> Answer {
    let r = identity(&st)?
        .revoke_client(&client_id, &actor(&req))
        .await
        .map_err(|e| err(&e, &no_client(&client_id)))?;
    Ok(json(StatusCode::OK, &r))
}
