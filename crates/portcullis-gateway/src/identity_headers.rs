//! The identity headers the upstream is given (`X-Portcullis-Principal`,
//! `-Kind`, `-Scopes`, `-Credential-Id`, `-Issuer`), built once per
//! principal per thread and reused while the principal says the same.
//!
//! Building them costs five allocations a request (four values and the
//! joined scopes); a cached `HeaderValue` is cloned by a reference count.
//! An entry is used only when every field it was built from equals the
//! principal's now (a key whose scopes change gets new headers on its
//! next request), so the cache can never say something the principal
//! does not.

use crate::proxy::{CREDENTIAL, ISSUER, KIND, PRINCIPAL, SCOPES};
use http::{HeaderMap, HeaderValue};
use portcullis_core::shared_str::SharedStr;
use portcullis_core::{Principal, PrincipalKind, Scopes};
use std::cell::RefCell;
use std::collections::HashMap;

/// Principals remembered per thread; past this the table starts over
/// (a flood of distinct principals costs what no cache would).
const PER_THREAD: usize = 1024;

struct Entry {
    subject: SharedStr,
    kind: PrincipalKind,
    scopes: Scopes,
    issuer: Option<String>,
    values: Values,
}

#[derive(Clone)]
struct Values {
    subject: Option<HeaderValue>,
    scopes: Option<HeaderValue>,
    credential: Option<HeaderValue>,
    issuer: Option<HeaderValue>,
}

type Table = HashMap<SharedStr, Entry, foldhash::fast::RandomState>;

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

fn build(p: &Principal) -> Values {
    Values {
        subject: HeaderValue::from_str(&p.subject).ok(),
        scopes: HeaderValue::from_str(&p.scopes.to_space_separated()).ok(),
        credential: HeaderValue::from_str(&p.credential_id).ok(),
        issuer: p
            .issuer
            .as_deref()
            .and_then(|i| HeaderValue::from_str(i).ok()),
    }
}

fn same(e: &Entry, p: &Principal) -> bool {
    e.kind == p.kind && e.subject == p.subject && e.scopes == p.scopes && e.issuer == p.issuer
}

/// The principal's values: from this thread's table when it says the
/// same, else built (and remembered).
fn values(p: &Principal) -> Values {
    TABLE.with(|t| {
        // Re-entered only if building panicked half-way: build afresh.
        let Ok(mut t) = t.try_borrow_mut() else {
            return build(p);
        };
        if let Some(e) = t.get(p.credential_id.as_str())
            && same(e, p)
        {
            return e.values.clone();
        }
        let values = build(p);
        if t.len() >= PER_THREAD {
            t.clear();
        }
        t.insert(
            p.credential_id.clone(),
            Entry {
                subject: p.subject.clone(),
                kind: p.kind,
                scopes: p.scopes.clone(),
                issuer: p.issuer.clone(),
                values: values.clone(),
            },
        );
        values
    })
}

/// Sets the identity headers for `p` on a request to the upstream
/// (replacing any of the same name: the client's were removed before).
pub fn insert(h: &mut HeaderMap, p: &Principal) {
    let v = values(p);
    if let Some(v) = v.subject {
        h.insert(PRINCIPAL, v);
    }
    h.insert(KIND, HeaderValue::from_static(p.kind.as_str()));
    if let Some(v) = v.scopes {
        h.insert(SCOPES, v);
    }
    if let Some(v) = v.credential {
        h.insert(CREDENTIAL, v);
    }
    if let Some(v) = v.issuer {
        h.insert(ISSUER, v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn principal(subject: &str, scopes: &[&str], id: &str, issuer: Option<&str>) -> Principal {
        Principal {
            subject: subject.into(),
            kind: if issuer.is_some() {
                PrincipalKind::External
            } else {
                PrincipalKind::ApiKey
            },
            scopes: Scopes::parse(&scopes.join(" ")).unwrap_or_default(),
            credential_id: id.into(),
            rate_limit: None,
            issuer: issuer.map(str::to_owned),
        }
    }

    fn fresh(p: &Principal) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = build(p);
        for (n, v) in [
            (PRINCIPAL, v.subject),
            (SCOPES, v.scopes),
            (CREDENTIAL, v.credential),
            (ISSUER, v.issuer),
        ] {
            if let Some(v) = v {
                h.insert(n, v);
            }
        }
        h.insert(KIND, HeaderValue::from_static(p.kind.as_str()));
        h
    }

    proptest! {
        /// Whatever sequence of principals a thread sees — the same id
        /// with other subjects, scopes or issuers among them — the headers
        /// are those built from the principal itself.
        #[test]
        fn cached_headers_always_say_what_the_principal_says(
            seq in proptest::collection::vec(
                (0u8..3, 0u8..3, proptest::collection::vec(0u8..4, 0..3), proptest::option::of(0u8..2)),
                1..40,
            )
        ) {
            for (id, subject, scopes, issuer) in seq {
                let scopes: Vec<String> = scopes.iter().map(|s| format!("s{s}")).collect();
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let issuer = issuer.map(|i| format!("https://issuer{i}.example"));
                let p = principal(&format!("user{subject}"), &scopes, &format!("key_{id}"), issuer.as_deref());
                let mut h = HeaderMap::new();
                insert(&mut h, &p);
                prop_assert_eq!(h, fresh(&p));
            }
        }
    }
}
