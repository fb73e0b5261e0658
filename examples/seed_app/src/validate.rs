//! Validated input, as pydantic gives FastAPI: a body or query that does
//! not fit gets 422 saying which field is wrong and why, in problem+json
//! with FastAPI's `loc` / `msg` / `type` entries under `errors`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode, request::Parts};
use serde_json::{Map, Value, json};

/// One wrong field.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// Where: `["body", "price"]`.
    pub loc: Vec<String>,
    /// What is wrong, for people.
    pub msg: String,
    /// What is wrong, for programs (pydantic's error types).
    pub kind: &'static str,
}

/// A 422 listing every wrong field.
#[derive(Debug)]
pub struct Invalid(pub Vec<FieldError>);

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let first = self
            .0
            .first()
            .map(|e| format!("{}: {}", e.loc.join("."), e.msg))
            .unwrap_or_else(|| "invalid input".into());
        let errors: Vec<Value> = self
            .0
            .iter()
            .map(|e| json!({"loc": e.loc, "msg": e.msg, "type": e.kind}))
            .collect();
        let body = json!({
            "type": "https://portcullis.dev/errors/validation_failed",
            "title": "Unprocessable Content",
            "status": 422,
            "detail": first,
            "code": "validation_failed",
            "errors": errors,
        });
        let mut r = (StatusCode::UNPROCESSABLE_ENTITY, body.to_string()).into_response();
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn err(loc: &[&str], msg: impl Into<String>, kind: &'static str) -> FieldError {
    FieldError {
        loc: loc.iter().map(|s| (*s).to_owned()).collect(),
        msg: msg.into(),
        kind,
    }
}

/// Reads fields from a JSON object (body) or a query string, collecting
/// every error rather than stopping at the first.
pub struct Fields<'a> {
    place: &'static str,
    map: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Fields of `map`, reported under `place` (`body`, `query`).
    pub fn new(place: &'static str, map: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            place,
            map,
            errors: Vec::new(),
        }
    }

    fn missing(&mut self, name: &str) {
        self.errors
            .push(err(&[self.place, name], "Field required", "missing"));
    }

    /// A required string of `min..=max` characters.
    pub fn string(&mut self, name: &str, min: usize, max: usize) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                self.missing(name);
                None
            }
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min {
                    self.errors.push(err(
                        &[self.place, name],
                        format!("String should have at least {min} character"),
                        "string_too_short",
                    ));
                    None
                } else if n > max {
                    self.errors.push(err(
                        &[self.place, name],
                        format!("String should have at most {max} characters"),
                        "string_too_long",
                    ));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(_) => {
                self.errors.push(err(
                    &[self.place, name],
                    "Input should be a valid string",
                    "string_type",
                ));
                None
            }
        }
    }

    /// A required integer of at least `min` (query strings: digits).
    pub fn int(&mut self, name: &str, min: i64) -> Option<i64> {
        let v = match self.map.get(name) {
            None | Some(Value::Null) => {
                self.missing(name);
                return None;
            }
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) if self.place == "query" => s.parse().ok(),
            Some(_) => None,
        };
        match v {
            None => {
                self.errors.push(err(
                    &[self.place, name],
                    "Input should be a valid integer",
                    "int_type",
                ));
                None
            }
            Some(i) if i < min => {
                self.errors.push(err(
                    &[self.place, name],
                    format!("Input should be greater than or equal to {min}"),
                    "greater_than_equal",
                ));
                None
            }
            Some(i) => Some(i),
        }
    }

    /// A required finite number above 0.
    pub fn positive(&mut self, name: &str) -> Option<f64> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                self.missing(name);
                None
            }
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Some(f),
                _ => {
                    self.errors.push(err(
                        &[self.place, name],
                        "Input should be greater than 0",
                        "greater_than",
                    ));
                    None
                }
            },
            Some(_) => {
                self.errors.push(err(
                    &[self.place, name],
                    "Input should be a valid number",
                    "float_type",
                ));
                None
            }
        }
    }

    /// The errors so far, as the answer, or nothing.
    pub fn finish(self) -> Result<(), Invalid> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.errors))
        }
    }
}

/// A type read from a JSON object's fields.
pub trait FromFields: Sized {
    /// Reads it; `None` only when `f` holds errors.
    fn from_fields(f: &mut Fields<'_>) -> Option<Self>;
}

fn read<T: FromFields>(place: &'static str, map: &Map<String, Value>) -> Result<T, Invalid> {
    let mut f = Fields::new(place, map);
    let v = T::from_fields(&mut f);
    f.finish()?;
    v.ok_or_else(|| Invalid(vec![err(&[place], "invalid input", "value_error")]))
}

/// A JSON body, validated.
pub struct Valid<T>(pub T);

/// Largest body read.
const MAX_BODY: usize = 64 * 1024;

impl<S: Send + Sync, T: FromFields> FromRequest<S> for Valid<T> {
    type Rejection = Response;
    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                Invalid(vec![err(
                    &["body"],
                    "The body is too large or unreadable",
                    "value_error",
                )])
                .into_response()
            })?;
        let value: Value = if json_type {
            serde_json::from_slice(&bytes).map_err(|e| {
                Invalid(vec![err(
                    &["body"],
                    format!("JSON decode error: {e}"),
                    "json_invalid",
                )])
                .into_response()
            })?
        } else {
            Value::Null
        };
        let Value::Object(map) = value else {
            return Err(Invalid(vec![err(
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
            )])
            .into_response());
        };
        read::<T>("body", &map)
            .map(Valid)
            .map_err(IntoResponse::into_response)
    }
}

/// A query string, validated.
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: FromFields> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let mut map = Map::new();
        if let Some(q) = parts.uri.query() {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let dec = |s: &str| {
                    portcullis::core::credential::percent_decode(s).map(|c| c.into_owned())
                };
                if let (Some(k), Some(v)) = (dec(k), dec(v)) {
                    // The last value wins, as in Starlette.
                    map.insert(k, Value::String(v));
                }
            }
        }
        read::<T>("query", &map)
            .map(ValidQuery)
            .map_err(IntoResponse::into_response)
    }
}
