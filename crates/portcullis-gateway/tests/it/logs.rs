//! Log canary tests.
