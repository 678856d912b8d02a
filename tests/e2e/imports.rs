//! What plugin authors meet at load and build time: the load-time import
//! check naming everything a component lacks at once, with hints, and
//! `wasmgate wit`, the WIT package cut to a plugin's grants that Python and
//! JavaScript plugins are built against.

use std::path::Path;
use std::process::Output;

use crate::e2e::harness::{BIN, Lang, Plugin, Setup, describe, run_with_timeout};

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wasmgate wit ARGS...`.
fn wit(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("wit").args(args).env_remove("RUST_LOG");
    run_with_timeout(cmd, std::time::Duration::from_secs(30))
}

/// The lines inside `world plugin { ... }` of a world.wit.
fn world_lines(world_wit: &str) -> Vec<String> {
    let start = world_wit.find("world plugin {").expect("world plugin");
    let block = &world_wit[start..];
    let block = &block[..block.find('}').expect("closed")];
    block
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_ungranted_capability_is_named_at_once_with_a_grants_line_that_works() {
    // The fixture imports every capability but `outbound`; it is granted two.
    let plugin = Plugin::fixture("fx").grants("{ log: true, net: { links: [fx-no-link] } }");
    let setup = Setup::new(std::slice::from_ref(&plugin));
    let out = setup.check();
    assert!(!out.status.success(), "{}", describe(&out));
    let text = all_output(&out);
    assert!(
        text.contains(
            "plugin `fx` imports `wasmgate:plugin/kv@0.2.2`, `wasmgate:plugin/keys@0.2.2`, `wasmgate:plugin/crypto@0.2.2`, `wasmgate:plugin/config@0.2.2`, `wasmgate:plugin/jobs@0.2.2`, `wasmgate:plugin/ratelimit@0.2.2`, `wasmgate:plugin/wireguard@0.2.2` but its grants do not include `kv`, `keys`, `crypto`, `config`, `jobs`, `ratelimit`, `wireguard`"
        ),
        "{text}"
    );
    let hint = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("hint: grant them: "))
        .unwrap_or_else(|| panic!("no grants hint:\n{text}"))
        .to_string();
    assert!(
        hint.starts_with("grants: { kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, net: "),
        "{hint}"
    );
    assert!(
        text.contains("wasmgate wit --config CONFIG --plugin fx --out DIR"),
        "{text}"
    );

    // The hint is config as it stands: pasted in place of the grants, the
    // plugin loads, and keeps the grant it had (its link pattern).
    let grants = hint.strip_prefix("grants: ").expect("grants: prefix");
    assert!(grants.contains("fx-no-link"), "{grants}");
    let fixed = Setup::new(&[plugin.grants(grants)]);
    let out = fixed.check();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn an_import_the_host_does_not_offer_is_refused_naming_each_one() {
    // (component
    //   (import "wasi:keyvalue/store@0.2.0" (instance))
    //   (import "wasi:cli/stdout@0.2.6" (instance))
    //   (import "wasmgate:plugin/disk@0.2.0" (instance)))
    const FOREIGN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x07, 0x03, 0x01, 0x42, 0x00, 0x0a, 0x1e,
        0x01, 0x00, 0x19, b'w', b'a', b's', b'i', b':', b'k', b'e', b'y', b'v', b'a', b'l', b'u',
        b'e', b'/', b's', b't', b'o', b'r', b'e', b'@', b'0', b'.', b'2', b'.', b'0', 0x05, 0x00,
        0x07, 0x03, 0x01, 0x42, 0x00, 0x0a, 0x1a, 0x01, 0x00, 0x15, b'w', b'a', b's', b'i', b':',
        b'c', b'l', b'i', b'/', b's', b't', b'd', b'o', b'u', b't', b'@', b'0', b'.', b'2', b'.',
        b'6', 0x05, 0x01, 0x07, 0x03, 0x01, 0x42, 0x00, 0x0a, 0x1f, 0x01, 0x00, 0x1a, b'w', b'a',
        b's', b'm', b'g', b'a', b't', b'e', b':', b'p', b'l', b'u', b'g', b'i', b'n', b'/', b'd',
        b'i', b's', b'k', b'@', b'0', b'.', b'2', b'.', b'0', 0x05, 0x02,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("foreign.wasm");
    std::fs::write(&wasm, FOREIGN).expect("write foreign.wasm");
    let mut plugin = Plugin::hello("foreign");
    plugin.wasm = wasm;
    let out = Setup::new(&[plugin]).check();
    assert!(!out.status.success(), "{}", describe(&out));
    let text = all_output(&out);
    assert!(
        text.contains(
            "plugin `foreign` imports `wasi:keyvalue/store@0.2.0`, `wasmgate:plugin/disk@0.2.0`, which this host does not offer"
        ),
        "{text}"
    );
    assert!(!text.contains("`wasi:cli/stdout"), "{text}");
}

#[test]
fn wit_writes_the_package_with_exactly_the_named_imports_and_exports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("wit");
    let out = wit(&[
        "--out",
        out_dir.to_str().unwrap(),
        "--grants",
        "log,kv",
        "--exports",
        "handler,admin",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let world = std::fs::read_to_string(out_dir.join("world.wit")).expect("world.wit");
    assert_eq!(
        world_lines(&world),
        [
            "import kv;",
            "import log;",
            // No grant: every plugin may stream its answer.
            "import streaming;",
            "export handler;",
            "export admin;"
        ]
    );
    assert!(world.contains("world minimal {"), "{world}");
    // Every other file is the repository's own.
    let wit_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    for entry in std::fs::read_dir(&wit_dir).expect("wit/") {
        let name = entry.expect("entry").file_name();
        let written = std::fs::read_to_string(out_dir.join(&name))
            .unwrap_or_else(|e| panic!("{}: {e}", name.to_string_lossy()));
        if name != "world.wit" {
            let original = std::fs::read_to_string(wit_dir.join(&name)).expect("wit file");
            assert_eq!(written, original, "{}", name.to_string_lossy());
        }
    }

    // Or a config's grants, in WIT order, with `handler` by default.
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = wit(&[
        "--out",
        out_dir.to_str().unwrap(),
        "--config",
        setup.config.to_str().unwrap(),
        "--plugin",
        "hello",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let world = std::fs::read_to_string(out_dir.join("world.wit")).expect("world.wit");
    assert_eq!(
        world_lines(&world),
        [
            "import kv;",
            "import config;",
            "import log;",
            "import streaming;",
            "export handler;"
        ]
    );

    for (args, needle) in [
        (vec!["--grants", "kv,disk"], "no capability `disk`"),
        (vec!["--exports", "admin"], "`handler`"),
        (
            vec![
                "--config",
                setup.config.to_str().unwrap(),
                "--plugin",
                "nobody",
            ],
            "no plugin `nobody`",
        ),
    ] {
        let mut all = vec!["--out", out_dir.to_str().unwrap()];
        all.extend(args);
        let out = wit(&all);
        assert!(!out.status.success(), "{all:?}: {}", describe(&out));
        assert!(
            all_output(&out).contains(needle),
            "{all:?}: {}",
            describe(&out)
        );
    }
}

/// hello-py and hello-js are built against `wasmgate wit`'s world for their
/// grants (the Makefile): they import exactly kv, config and log.
#[test]
fn python_and_javascript_builds_import_exactly_the_world_wit_wrote() {
    for lang in [Lang::Python, Lang::Js] {
        let out = Setup::new(&[Plugin::hello_in(lang, "hello").grants("{ config: true }")]).check();
        assert!(!out.status.success(), "{lang:?}: {}", describe(&out));
        let text = all_output(&out);
        assert!(
            text.contains(
                "plugin `hello` imports `wasmgate:plugin/kv@0.2.2`, `wasmgate:plugin/log@0.2.2` but its grants do not include `kv`, `log`\n"
            ),
            "{lang:?}: {text}"
        );
        let out = Setup::new(&[Plugin::hello_in(lang, "hello")]).check();
        assert!(out.status.success(), "{lang:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("exports handler, admin"),
            "{lang:?}: {}",
            describe(&out)
        );
    }
}

/// componentize-js imports wasi:http/types (and outgoing-handler) for its
/// `fetch`, used or not; the host links them as stubs that trap.
#[test]
fn a_javascript_plugin_importing_wasi_http_loads() {
    let wasm = Lang::Js.hello_wasm();
    let bytes = std::fs::read(&wasm).expect("hello-js.wasm");
    let needle = b"wasi:http/types@0.2.";
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle),
        "{} does not import wasi:http/types: the test proves nothing",
        wasm.display()
    );
    let out = Setup::new(&[Plugin::hello_in(Lang::Js, "hello")]).check();
    assert!(out.status.success(), "{}", describe(&out));
}
