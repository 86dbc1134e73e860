//! `switchyard check` against the real binary: it reports, all at once and
//! each with its TOML path, the config's own errors and every module that
//! `run` could not load — including an `init` that refuses its config.

use std::process::Command;

use crate::startup::wasm;
use crate::support::router::bin;

/// Run `switchyard check` on `toml`; exit code and stdout + stderr.
fn check(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn consumer(modules: &[(&str, &str)]) -> String {
    let mut c = String::from(
        "[consumers.esp]\ntopics = [\"*\"]\n[consumers.esp.endpoint]\nurl = \"http://127.0.0.1:9/\"\n",
    );
    for (m, config) in modules {
        c.push_str(&format!(
            "[[consumers.esp.modules]]\npath = \"{}\"\ndeadline = \"5s\"\nconfig = {{ {config} }}\n",
            wasm(m).display()
        ));
    }
    c
}

/// A table without `soft_delete_column` and a rule without `ops`: valid.
const POSTGRES: &str = r#"
[sources.crm]
type = "postgres"
url = "postgres://u:p@127.0.0.1:5432/crm"
publication = "sy_crm"
slot = "sy_crm"

[[sources.crm.tables]]
table = "public.orders"
topic = "order.{op}"
account_column = "account_id"

[[sources.crm.tables.rules]]
when_changed = ["status"]
topic = "order.status_changed"
"#;

#[test]
fn check_runs_every_modules_init_and_reports_refusals_with_the_other_errors() {
    let (code, out) = check(&format!(
        "[log]\npartitions = 0\n{POSTGRES}\n{}",
        consumer(&[
            ("sy_test_echo", ""),
            ("redact", "phone_country_code = \"abc\""),
            ("sy_test_refuse", "reason = \"no thanks\""),
            ("filter", ""),
        ])
    ));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("consumers.esp.modules[1].config: module redact refused it: ")
            && out.contains("phone_country_code"),
        "{out}"
    );
    assert!(
        out.contains(
            "consumers.esp.modules[2].config: module sy_test_refuse refused it: refused: no thanks"
        ),
        "{out}"
    );
    assert!(out.contains("log.partitions: "), "{out}");
    assert!(out.contains("3 error(s)"), "exactly these three: {out}");
    assert!(
        !out.contains("modules[0]") && !out.contains("modules[3]"),
        "{out}"
    );
    // Defaults fit their table: no errors about ops nobody wrote.
    assert!(!out.contains("ops"), "{out}");
}

#[test]
fn check_says_ok_when_every_module_accepts_its_config() {
    let (code, out) = check(&format!(
        "{POSTGRES}\n{}",
        consumer(&[
            ("redact", "phone_country_code = \"44\""),
            ("sy_test_echo", "topic = \"customer.x\""),
        ])
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with(": ok"), "{out}");
}

#[test]
fn a_module_that_cannot_be_loaded_is_reported_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let toml = consumer(&[("sy_test_echo", "")]).replace(
        &wasm("sy_test_echo").display().to_string(),
        &junk.display().to_string(),
    );
    let (code, out) = check(&toml);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("consumers.esp.modules[0]: module "), "{out}");
}
