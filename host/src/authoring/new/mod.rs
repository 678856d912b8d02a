//! `wasmgate new`: a plugin project that builds anywhere, with the WIT files
//! and the language's helpers (the Rust SDK crate, `wasmgate.py`,
//! `wasmgate.js`) vendored from copies compiled into this binary, so the
//! project always matches the host that made it.
//!
//! Python and JavaScript projects build with `sh build.sh`: `wasmgate wit`
//! writes the world for the grants in the project's `wasmgate.yaml`, then
//! componentize-py or componentize-js (the versions pinned here and in the
//! repository's Makefile) compiles the sources against it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::wit::FILES;

/// A plugin language `wasmgate new` can start a project in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The componentize-py release projects are set up with (as the Makefile's).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js release projects are set up with (as the Makefile's).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

impl Lang {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// The command that builds a project of this language.
    pub fn build_command(self) -> &'static str {
        match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2",
            Lang::Python | Lang::Js => "sh build.sh",
        }
    }

    /// The command that runs the project's tests.
    pub fn test_command(self) -> &'static str {
        match self {
            Lang::Rust => "cargo test",
            Lang::Python => "python3 -m unittest",
            Lang::Js => "node --test test.mjs",
        }
    }

    /// The one-time setup to print when the toolchain is not found (`None`
    /// when it is, or when there is none).
    fn setup_step(self, dir: &Path) -> Option<String> {
        match self {
            Lang::Rust => (!wasm_target_installed()).then(|| "rustup target add wasm32-wasip2".into()),
            Lang::Python => (!dir.join(".venv/bin/componentize-py").exists()
                && !on_path("componentize-py"))
            .then(|| {
                format!(
                    "python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY_VERSION}"
                )
            }),
            Lang::Js => (!dir.join("node_modules/.bin/componentize-js").exists()
                && !on_path("componentize-js"))
            .then(|| "npm install".into()),
        }
    }
}

/// The Rust SDK's sources.
const SDK: &[(&str, &str)] = &[
    (
        "config.rs",
        include_str!("../../../../plugins/sdk/src/config.rs"),
    ),
    (
        "crypto.rs",
        include_str!("../../../../plugins/sdk/src/crypto.rs"),
    ),
    (
        "error.rs",
        include_str!("../../../../plugins/sdk/src/error.rs"),
    ),
    (
        "http.rs",
        include_str!("../../../../plugins/sdk/src/http.rs"),
    ),
    (
        "jobs.rs",
        include_str!("../../../../plugins/sdk/src/jobs.rs"),
    ),
    (
        "keys.rs",
        include_str!("../../../../plugins/sdk/src/keys.rs"),
    ),
    ("kv.rs", include_str!("../../../../plugins/sdk/src/kv.rs")),
    ("lib.rs", include_str!("../../../../plugins/sdk/src/lib.rs")),
    ("log.rs", include_str!("../../../../plugins/sdk/src/log.rs")),
    ("net.rs", include_str!("../../../../plugins/sdk/src/net.rs")),
    (
        "outbound.rs",
        include_str!("../../../../plugins/sdk/src/outbound.rs"),
    ),
    (
        "paging.rs",
        include_str!("../../../../plugins/sdk/src/paging.rs"),
    ),
    (
        "ratelimit.rs",
        include_str!("../../../../plugins/sdk/src/ratelimit.rs"),
    ),
    (
        "router.rs",
        include_str!("../../../../plugins/sdk/src/router.rs"),
    ),
    (
        "stream.rs",
        include_str!("../../../../plugins/sdk/src/stream.rs"),
    ),
    (
        "time.rs",
        include_str!("../../../../plugins/sdk/src/time.rs"),
    ),
    (
        "wireguard.rs",
        include_str!("../../../../plugins/sdk/src/wireguard.rs"),
    ),
];

/// Where the SDK finds the WIT in this repository, and in a project.
const SDK_WIT_PATH: (&str, &str) = ("path: \"../../wit\"", "path: \"../wit\"");

const PY_SDK: &str = include_str!("../../../../sdk/python/wasmgate.py");
const JS_SDK: &str = include_str!("../../../../sdk/js/wasmgate.js");

const RUST_LIB: &str = include_str!("rust/lib.rs.tmpl");
const PY_APP: &str = include_str!("python/app.py.tmpl");
const PY_TEST: &str = include_str!("python/test_app.py.tmpl");
const PY_BUILD: &str = include_str!("python/build.sh.tmpl");
const JS_APP: &str = include_str!("js/app.js.tmpl");
const JS_TEST: &str = include_str!("js/test.mjs.tmpl");
const JS_BUILD: &str = include_str!("js/build.sh.tmpl");
const JS_PACKAGE: &str = include_str!("js/package.json.tmpl");
const RUST_CARGO: &str = include_str!("rust/Cargo.toml.tmpl");
const SDK_CARGO: &str = include_str!("rust/sdk-Cargo.toml.tmpl");
const CONFIG: &str = include_str!("wasmgate.yaml.tmpl");
const README: &str = include_str!("README.md.tmpl");
const GITIGNORE: &str = include_str!("gitignore.tmpl");

/// The WIT package's version (`wasmgate:plugin@X`).
pub fn wit_version() -> &'static str {
    FILES
        .iter()
        .find_map(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix("package wasmgate:plugin@"))
                .map(|v| v.trim_end_matches(';'))
        })
        .unwrap_or("unknown")
}

/// Whether `name` can be a plugin and a package name: 1 to 32 of a-z, 0-9,
/// `_` and `-`, starting with a letter.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// What `new` made: the directory and the commands to type next.
pub struct Created {
    pub dir: PathBuf,
    pub next: Vec<String>,
}

/// Writes a new `lang` project for the plugin `name` into `dir` (which must
/// not exist, or be empty).
pub fn new_project(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<Created> {
    if !valid_name(name) {
        anyhow::bail!(
            "`{name}` cannot name a plugin: use 1 to 32 of a-z, 0-9, _ and -, starting with a letter"
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} exists and is not empty: choose another --dir",
            dir.display()
        );
    }
    let files = match lang {
        Lang::Rust => rust_files(name)?,
        Lang::Python => python_files(name),
        Lang::Js => js_files(name),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut next = vec![format!("cd {}", dir.display())];
    next.extend(lang.setup_step(dir));
    next.push(lang.build_command().into());
    next.push(format!("wasmgate call {name} GET /"));
    next.push("wasmgate dev".into());
    Ok(Created {
        dir: dir.to_path_buf(),
        next,
    })
}

/// Whether an executable `name` is in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(name)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Whether rustup says the wasm32-wasip2 target is installed (true when
/// rustup cannot tell: there is nothing useful to add then).
fn wasm_target_installed() -> bool {
    match std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2"),
        _ => true,
    }
}

fn common_files(
    name: &str,
    lang: Lang,
    wasm: &str,
    watch: &str,
    setup: &str,
    test: &str,
) -> Vec<(PathBuf, String)> {
    let wit_version = format!("wasmgate:plugin@{}", wit_version());
    let wit_note = match lang {
        Lang::Rust => format!(
            "The WIT interfaces the plugin is built against are in `wit/` ({wit_version});\n\
             they match the host that made this project."
        ),
        Lang::Python | Lang::Js => format!(
            "The WIT interfaces are in `wit/` ({wit_version}), as the host that made\n\
             this project has them. `build.sh` builds against `build/wit`: the same\n\
             package with a world that imports only the capabilities `grants:` names,\n\
             so after changing `grants:`, rebuild."
        ),
    };
    let vars = [
        ("name", name),
        ("language", lang.title()),
        ("wasm", wasm),
        ("build", lang.build_command()),
        ("watch", watch),
        ("setup", setup),
        ("test", test),
        ("wit_note", &wit_note),
        ("host_version", env!("CARGO_PKG_VERSION")),
        ("wit_version", &wit_version),
    ];
    let mut files = vec![
        (PathBuf::from("wasmgate.yaml"), fill(CONFIG, &vars)),
        (PathBuf::from("README.md"), fill(README, &vars)),
        (PathBuf::from(".gitignore"), GITIGNORE.to_string()),
    ];
    for (file, text) in FILES {
        files.push((Path::new("wit").join(file), text.to_string()));
    }
    files
}

/// The variables of the Python and JavaScript templates.
fn script_vars(name: &str) -> [(&str, &str); 3] {
    [
        ("name", name),
        ("wit_semver", wit_version()),
        ("componentize_js", COMPONENTIZE_JS_VERSION),
    ]
}

fn python_files(name: &str) -> Vec<(PathBuf, String)> {
    let setup = format!(
        "Needs Python 3 and componentize-py {COMPONENTIZE_PY_VERSION} (from PyPI), in `.venv` or on PATH: \
         `python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY_VERSION}`. \
         `build.sh` runs `wasmgate wit`, so `wasmgate` must be on PATH (or named by `WASMGATE`). \
         `wasmgate.py` holds the helpers (router, JSON, errors, kv/keys/config/log)."
    );
    let mut files = common_files(
        name,
        Lang::Python,
        &format!("build/{name}.wasm"),
        "app.py, wasmgate.py",
        &setup,
        "after a build, `python3 -m unittest` calls the plugin through `wasmgate call`.",
    );
    let vars = script_vars(name);
    files.push(("app.py".into(), fill(PY_APP, &vars)));
    files.push(("test_app.py".into(), fill(PY_TEST, &vars)));
    files.push(("build.sh".into(), fill(PY_BUILD, &vars)));
    files.push(("wasmgate.py".into(), PY_SDK.to_string()));
    files
}

fn js_files(name: &str) -> Vec<(PathBuf, String)> {
    let setup = format!(
        "Needs Node.js 18 or later and componentize-js {COMPONENTIZE_JS_VERSION} (from npm), in \
         `node_modules` or on PATH: `npm install`. `build.sh` runs `wasmgate wit`, so `wasmgate` \
         must be on PATH (or named by `WASMGATE`). `wasmgate.js` holds the helpers (router, \
         JSON, errors, kv/keys/config/log)."
    );
    let mut files = common_files(
        name,
        Lang::Js,
        &format!("build/{name}.wasm"),
        "app.js, wasmgate.js",
        &setup,
        "after a build, `node --test test.mjs` calls the plugin through `wasmgate call`.",
    );
    let vars = script_vars(name);
    files.push(("app.js".into(), fill(JS_APP, &vars)));
    files.push(("test.mjs".into(), fill(JS_TEST, &vars)));
    files.push(("build.sh".into(), fill(JS_BUILD, &vars)));
    files.push(("package.json".into(), fill(JS_PACKAGE, &vars)));
    files.push(("wasmgate.js".into(), JS_SDK.to_string()));
    files
}

fn rust_files(name: &str) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let wasm = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    let mut files = common_files(
        name,
        Lang::Rust,
        &wasm,
        "src, Cargo.toml",
        "Needs Rust 1.85 or later and its wasm32-wasip2 target: `rustup target add wasm32-wasip2`.",
        "`cargo test` runs the unit tests natively.",
    );
    let vars = [("name", name), ("version", env!("CARGO_PKG_VERSION"))];
    files.push(("Cargo.toml".into(), fill(RUST_CARGO, &vars)));
    files.push(("src/lib.rs".into(), fill(RUST_LIB, &vars)));
    files.push(("wasmgate-sdk/Cargo.toml".into(), fill(SDK_CARGO, &vars)));
    for (file, text) in SDK {
        let text = if *file == "lib.rs" {
            anyhow::ensure!(
                text.matches(SDK_WIT_PATH.0).count() == 1,
                "the embedded SDK does not name its WIT path as expected"
            );
            text.replace(SDK_WIT_PATH.0, SDK_WIT_PATH.1)
        } else {
            text.to_string()
        };
        files.push((Path::new("wasmgate-sdk/src").join(file), text));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &str, ext: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_wit_and_sdk_file_is_embedded() {
        let mut wit: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
        wit.sort();
        assert_eq!(names_in("../wit", ".wit"), wit);
        let sdk: Vec<&str> = SDK.iter().map(|(n, _)| *n).collect();
        assert_eq!(names_in("../plugins/sdk/src", ".rs"), sdk);
    }

    /// The vendored SDK's dependencies are the repository SDK's, with the
    /// workspace's versions.
    #[test]
    fn the_vendored_sdk_has_the_sdk_dependencies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let sdk = std::fs::read_to_string(root.join("plugins/sdk/Cargo.toml")).unwrap();
        let section = |text: &str| {
            let deps = text.split("[dependencies]").nth(1).unwrap();
            let deps = deps.split("\n[").next().unwrap();
            deps.lines()
                .filter(|l| l.contains('='))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let mut n = 0;
        for line in section(&sdk) {
            let dep = line.split('=').next().unwrap().trim();
            let wanted = if line.contains("workspace = true") {
                workspace
                    .lines()
                    .find(|l| l.starts_with(&format!("{dep} =")))
                    .unwrap_or_else(|| panic!("{dep} is not in the workspace"))
                    .to_string()
            } else {
                line.trim().to_string()
            };
            assert!(
                SDK_CARGO.contains(&wanted),
                "{wanted} is not in the template"
            );
            n += 1;
        }
        assert_eq!(n, section(SDK_CARGO).len(), "the template has more");
    }

    #[test]
    fn the_project_has_no_path_back_into_the_repository() {
        for files in [python_files("demo"), js_files("demo")] {
            for (path, text) in &files {
                assert!(!text.contains("../"), "{} points outside", path.display());
                assert!(
                    !text.contains("{{"),
                    "{} has an unfilled template",
                    path.display()
                );
            }
        }
        let files = rust_files("demo").unwrap();
        for (path, text) in &files {
            assert!(
                !text.contains("../../"),
                "{} points outside: {text}",
                path.display()
            );
            assert!(
                !text.contains("{{"),
                "{} has an unfilled template: {text}",
                path.display()
            );
        }
        let lib = &files
            .iter()
            .find(|(p, _)| p.ends_with("wasmgate-sdk/src/lib.rs"))
            .unwrap()
            .1;
        assert!(lib.contains("path: \"../wit\""));
    }

    /// The toolchain versions new projects pin are the ones CI builds the
    /// repository's Python and JavaScript examples with.
    #[test]
    fn the_pinned_toolchains_are_the_makefiles() {
        let makefile =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Makefile"))
                .unwrap();
        assert!(makefile.contains(&format!(
            "COMPONENTIZE_PY_VERSION ?= {COMPONENTIZE_PY_VERSION}\n"
        )));
        assert!(makefile.contains(&format!(
            "COMPONENTIZE_JS_VERSION ?= {COMPONENTIZE_JS_VERSION}\n"
        )));
    }

    /// A JavaScript plugin imports the interfaces by their versioned names.
    #[test]
    fn the_js_template_imports_the_package_version() {
        let app = &js_files("demo")
            .into_iter()
            .find(|(p, _)| p.ends_with("app.js"))
            .unwrap()
            .1;
        assert!(app.contains(&format!("'wasmgate:plugin/kv@{}'", wit_version())));
    }

    #[test]
    fn the_wit_version_is_read_from_the_package() {
        assert!(wit_version().starts_with("0."), "{}", wit_version());
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("demo"));
        assert!(valid_name("my-plugin_2"));
        for bad in ["", "2demo", "Demo", "de mo", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
