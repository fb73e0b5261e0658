//! Postgres: the store for several gateways (stub while it is written).

use super::backend::Backend;
use super::{StoreError, StoreOptions, redact_url};
use std::sync::Arc;

/// Opens the Postgres store named by `url`.
pub(crate) async fn open(
    url: &str,
    _options: &StoreOptions,
) -> Result<Arc<dyn Backend>, StoreError> {
    Err(StoreError::UnsupportedUrl(redact_url(url)))
}
