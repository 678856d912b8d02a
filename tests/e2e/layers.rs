//! The host's layer rule (host/src/lib.rs): a module uses only modules of
//! the layers before its own. Read from the sources: every `crate::<module>`
//! path outside comments and test modules.

use std::path::{Path, PathBuf};

/// The layers, first to last; `main` is the binary and uses the library as
/// `wasmgate::`.
const LAYERS: &[&[&str]] = &[
    &["util", "db", "metrics", "slots", "listener"],
    &["caps"],
    &["config"],
    &["router", "authoring", "package"],
    &["aot"],
    &["runtime"],
    &["scheduler"],
    &["server"],
    &["dev", "remote"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| {
            panic!("module `{module}` is in no layer: add it to host/src/lib.rs and this test")
        })
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules `path` names as `crate::<module>`, outside comments
/// and `#[cfg(test)]` modules (tests may reach anywhere).
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn every_host_module_uses_only_the_layers_before_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let own = layer_of(&top);
        for used in uses(&std::fs::read_to_string(file).unwrap()) {
            if used == top {
                continue;
            }
            if layer_of(&used) >= own {
                broken.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layer_check_sees_a_use_outside_comments_and_tests() {
    let text = "use crate::util::x;\n// crate::server in a comment\nfn f() { crate::db::Db::open(); }\n#[cfg(test)]\nmod tests { use crate::server; }\n";
    assert_eq!(uses(text), ["util", "db"]);
}
