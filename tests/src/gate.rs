//! Whether a test may skip what it cannot run here. Under `CI=true` it may not: a
//! missing tool or privilege is a failure with the reason; elsewhere the test says what
//! is missing and stops. (Self-contained: `agent/tests` includes this file too.)

/// Whether the tests run under `CI=true`, where a test that cannot run fails instead of
/// being skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `test` cannot run here, because of `why`: under `CI=true` it fails with the reason;
/// elsewhere it says so on stderr, and the caller returns.
pub fn skip(test: &str, why: &str) {
    if ci() {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    eprintln!("skipping {test}: {why}");
}
