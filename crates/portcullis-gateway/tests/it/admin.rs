//! Admin API tests.
