//! `switchyard new module NAME --lang rust|python|js`: scaffold a transform
//! module that builds and passes `switchyard transform test` as it is: the
//! module, a README, a sample event, a build script and a unit test.
//!
//! The templates live in `crates/cli/templates/` and are compiled into the
//! binary, with the contract (`wit/`) and the JavaScript tool pins of
//! `examples/js-module`, so a scaffold never drifts from what the router
//! speaks.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};

/// The contract, written into Python and JavaScript scaffolds (the Rust SDK
/// carries its own copy).
static WIT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../wit");

const SAMPLE_EVENT: &str = include_str!("../templates/sample-event.json");

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("build.sh", include_str!("../templates/rust/build.sh")),
    ("README.md", include_str!("../templates/rust/README.md")),
];
const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("logic.py", include_str!("../templates/python/logic.py")),
    (
        "test_logic.py",
        include_str!("../templates/python/test_logic.py"),
    ),
    ("build.sh", include_str!("../templates/python/build.sh")),
    ("README.md", include_str!("../templates/python/README.md")),
];
const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("../templates/js/app.js")),
    ("logic.js", include_str!("../templates/js/logic.js")),
    (
        "logic.test.js",
        include_str!("../templates/js/logic.test.js"),
    ),
    ("build.sh", include_str!("../templates/js/build.sh")),
    ("README.md", include_str!("../templates/js/README.md")),
];

/// The componentize-js pins of the example module: the same lock file means
/// the same tool, and the copy `tests/deps.sh` installed is found by its hash.
const JS_PACKAGE_JSON: &str = include_str!("../../../examples/js-module/package.json");
const JS_PACKAGE_LOCK: &str = include_str!("../../../examples/js-module/package-lock.json");
/// The example's build script names the componentize-py version (`version=`).
const PY_EXAMPLE_BUILD: &str = include_str!("../../../examples/python-module/build.sh");

/// Where the Rust guest SDK of the checkout this binary was built from is.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk");

/// The path the generated module's request goes to.
const REQUEST_PATH: &str = "/events";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

pub struct NewArgs {
    pub name: String,
    pub lang: Lang,
    /// Parent directory; the module goes to `<dir>/<name>`.
    pub dir: PathBuf,
    /// The Rust guest SDK (`guest-sdk/` of a Switchyard checkout).
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("module name `{0}`: use 1-64 of lowercase letters, digits and `-`, starting with a letter (e.g. `loyalty-sync`)")]
    BadName(String),
    #[error("{0} exists and is not empty: pick another name or --dir")]
    Exists(PathBuf),
    #[error("the Rust guest SDK (switchyard-guest) is not on crates.io: pass --sdk PATH to the guest-sdk/ directory of a Switchyard checkout ({0} does not exist)")]
    NoSdk(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("examples/python-module/build.sh names no componentize-py `version=`")]
    NoPyVersion,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

fn py_version() -> Result<&'static str, NewError> {
    PY_EXAMPLE_BUILD
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .map(str::trim)
        .ok_or(NewError::NoPyVersion)
}

fn write(path: &Path, text: &str, executable: bool) -> Result<(), NewError> {
    let err = |source| NewError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(())
}

fn write_wit(dir: &Dir<'_>, to: &Path) -> Result<(), NewError> {
    for f in dir.files() {
        if f.path().extension().is_some_and(|e| e == "wit") {
            let text = String::from_utf8_lossy(f.contents());
            write(&to.join(f.path()), &text, false)?;
        }
    }
    for d in dir.dirs() {
        write_wit(d, to)?;
    }
    Ok(())
}

/// Create the module; returns its directory.
pub fn new_module(args: &NewArgs) -> Result<PathBuf, NewError> {
    if !valid_name(&args.name) {
        return Err(NewError::BadName(args.name.clone()));
    }
    let root = args.dir.join(&args.name);
    if root.exists()
        && std::fs::read_dir(&root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(NewError::Exists(root));
    }
    let sdk = match args.lang {
        Lang::Rust => {
            let p = args.sdk.clone().unwrap_or_else(|| PathBuf::from(BUILT_SDK));
            let p = p.canonicalize().map_err(|_| NewError::NoSdk(p.clone()))?;
            if !p.join("Cargo.toml").is_file() {
                return Err(NewError::NoSdk(p));
            }
            p.display().to_string()
        }
        _ => String::new(),
    };
    let crate_name = args.name.replace('-', "_");
    let cpy = py_version()?;
    let fill = |t: &str| {
        t.replace("{{name}}", &args.name)
            .replace("{{crate}}", &crate_name)
            .replace("{{path}}", REQUEST_PATH)
            .replace("{{sdk}}", &sdk)
            .replace("{{cpy_version}}", cpy)
    };
    let files = match args.lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for (rel, text) in files {
        write(&root.join(rel), &fill(text), rel.ends_with(".sh"))?;
    }
    write(&root.join("sample-event.json"), SAMPLE_EVENT, false)?;
    match args.lang {
        Lang::Rust => write(&root.join(".gitignore"), "/target\n/build\n", false)?,
        Lang::Python => {
            write_wit(&WIT, &root.join("wit"))?;
            write(&root.join(".gitignore"), "/build\n__pycache__/\n", false)?;
        }
        Lang::Js => {
            write_wit(&WIT, &root.join("wit"))?;
            let mut pkg: serde_json::Value = serde_json::from_str(JS_PACKAGE_JSON)
                .expect("examples/js-module/package.json is JSON");
            pkg["name"] = args.name.clone().into();
            pkg["description"] =
                format!("{}: a Switchyard transform in JavaScript", args.name).into();
            pkg["scripts"] = serde_json::json!({"build": "bash build.sh", "test": "node --test"});
            let text = serde_json::to_string_pretty(&pkg).expect("JSON") + "\n";
            write(&root.join("package.json"), &text, false)?;
            // The lock file verbatim: its hash finds the componentize-js that
            // tests/deps.sh installed; `npm ci` accepts the new package name.
            write(&root.join("package-lock.json"), JS_PACKAGE_LOCK, false)?;
            write(&root.join(".gitignore"), "/build\n/node_modules\n", false)?;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "loyalty-sync", "esp2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "1x", "x_y", "x-", "x/y", "..", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_a_non_empty_directory_and_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        std::fs::write(dir.path().join("m/keep"), "x").unwrap();
        let e = new_module(&NewArgs {
            name: "m".into(),
            lang: Lang::Python,
            dir: dir.path().into(),
            sdk: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("--dir"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("m/keep")).unwrap(),
            "x"
        );
    }

    #[test]
    fn the_componentize_py_version_is_the_examples() {
        let v = py_version().unwrap();
        assert!(v.split('.').count() == 3, "{v}");
    }
}
