//! `wasmgate new`: a plugin project that builds anywhere, with the WIT files
//! and (for Rust) the SDK vendored from copies compiled into this binary, so
//! the project always matches the host that made it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::wit::FILES;

/// A plugin language `wasmgate new` can start a project in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
}

impl Lang {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
        }
    }

    /// The command that builds a project of this language.
    pub fn build_command(self) -> &'static str {
        match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2",
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

const RUST_LIB: &str = include_str!("rust/lib.rs.tmpl");
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
    if lang == Lang::Rust && !wasm_target_installed() {
        next.push("rustup target add wasm32-wasip2".into());
    }
    next.push(lang.build_command().into());
    next.push(format!("wasmgate call {name} GET /"));
    next.push("wasmgate dev".into());
    Ok(Created {
        dir: dir.to_path_buf(),
        next,
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
    let vars = [
        ("name", name),
        (
            "language",
            match lang {
                Lang::Rust => "Rust",
            },
        ),
        ("wasm", wasm),
        ("build", lang.build_command()),
        ("watch", watch),
        ("setup", setup),
        ("test", test),
        ("host_version", env!("CARGO_PKG_VERSION")),
        ("wit_version", &format!("wasmgate:plugin@{}", wit_version())),
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
