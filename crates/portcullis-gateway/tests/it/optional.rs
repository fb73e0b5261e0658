//! Tests that need a program the Rust toolchain does not bring (Chromium,
//! Caddy, node…): skipped where it is missing, unless REQUIRE_BROWSER_TESTS
//! is set (CI sets it), when a missing program is a failure.

/// Whether the test can run: true when nothing is `missing`. Otherwise it
/// fails when REQUIRE_BROWSER_TESTS is set, or says SKIPPED and returns
/// false. `install` says what scripts/install-test-deps.sh installs.
pub fn present_or_skip(test: &str, missing: &[&str], install: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    let required = std::env::var_os("REQUIRE_BROWSER_TESTS").is_some_and(|v| !v.is_empty());
    assert!(
        !required,
        "REQUIRE_BROWSER_TESTS is set but {missing} missing: run scripts/install-test-deps.sh ({install})"
    );
    eprintln!(
        "SKIPPED {test}: {missing} missing (run scripts/install-test-deps.sh to install {install}; set REQUIRE_BROWSER_TESTS=1 to make this a failure)"
    );
    false
}
