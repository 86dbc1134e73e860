//! `assert_no_secrets`: fail if any secret (token, password, PII value)
//! appears in log output, in any of the forms a logger might print it.
//!
//! Self-contained (only crates the `switchyard` package already depends
//! on), so other test binaries can include it directly:
//! `#[path = "../it/support/secrets.rs"] mod secrets;`

/// The forms of `secret` a log line could contain: as is, JSON-escaped,
/// percent-encoded (URLs, form bodies) and base64 (Basic auth, encoders).
pub fn forms(secret: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let mut out = vec![("verbatim", secret.to_string())];
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_string();
    if json != secret {
        out.push(("JSON-escaped", json));
    }
    let pct = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    if pct != secret {
        out.push(("percent-encoded", pct));
    }
    out.push((
        "base64",
        base64::engine::general_purpose::STANDARD.encode(secret),
    ));
    out
}

/// Panic, naming each secret and the log lines that show it, if any of
/// `secrets` occurs in `logs` in any of its [`forms`]. Secrets shorter
/// than 6 characters are refused: they would match by accident.
pub fn assert_no_secrets(logs: &str, secrets: &[&str]) {
    let found = find_secrets(logs, secrets);
    assert!(
        found.is_empty(),
        "secrets found in the logs ({} bytes scanned):\n{}",
        logs.len(),
        found.join("\n")
    );
}

/// What [`assert_no_secrets`] checks, as a list of findings (one per
/// secret and form, with up to 3 example lines) instead of a panic: for
/// suites that count leaks into a report before asserting.
pub fn find_secrets(logs: &str, secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets {
        assert!(
            s.len() >= 6,
            "secret {s:?} is too short to search for reliably (use ≥ 6 characters)"
        );
        for (form, needle) in forms(s) {
            let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&needle)).collect();
            if !lines.is_empty() {
                let shown: Vec<String> = lines
                    .iter()
                    .take(3)
                    .map(|l| l.chars().take(400).collect())
                    .collect();
                found.push(format!(
                    "{s:?} ({form}) in {} line(s), e.g.:\n    {}",
                    lines.len(),
                    shown.join("\n    ")
                ));
            }
        }
    }
    found
}
