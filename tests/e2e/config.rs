//! Config errors: `check` and `serve` both refuse the config with a message
//! on stderr that names the problem, and a non-zero exit.

use std::ffi::OsStr;
use std::process::Output;

use crate::e2e::harness::{Plugin, Setup, config_yaml, describe, quote, wasm};

/// Runs `check` and `serve` on `yaml`; both must fail, say `error:` and
/// mention every one of `needles` on stderr. Returns the two outputs.
#[track_caller]
fn assert_refused(yaml: &str, needles: &[&str]) -> [Output; 2] {
    let setup = Setup::with_yaml(yaml);
    let check = setup.check();
    let serve = setup.serve_expecting_failure();
    for (what, out) in [("check", &check), ("serve", &serve)] {
        assert!(
            !out.status.success(),
            "{what} accepted the config:\n{yaml}\n{}",
            describe(out)
        );
        // `check` may report a plugin that fails to load in its table on
        // stdout; `serve` has only stderr for it.
        let stderr = if what == "check" {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        assert!(
            stderr.contains("error:"),
            "{what}: stderr has no `error:`\n{}",
            describe(out)
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{what}: stderr does not mention {needle:?}\nconfig:\n{yaml}\n{}",
                describe(out)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.lines().any(|l| l == "ready"),
            "{what} said ready:\n{}",
            describe(out)
        );
    }
    [check, serve]
}

/// The spec gives config errors exit code 2.
#[track_caller]
fn assert_exit_2(outputs: &[Output; 2]) {
    for out in outputs {
        assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    }
}

fn hello_yaml() -> String {
    config_yaml(&[Plugin::hello("hello")])
}

#[test]
fn an_unknown_key_in_a_plugin_is_refused_by_name() {
    let yaml = hello_yaml().replace("    grants:", "    colour: blue\n    grants:");
    assert_exit_2(&assert_refused(&yaml, &["colour"]));
}

#[test]
fn an_unknown_key_error_names_its_line() {
    let yaml = hello_yaml().replace("    grants:", "    colour: blue\n    grants:");
    let line = yaml
        .lines()
        .position(|l| l.contains("colour"))
        .expect("colour line")
        + 1;
    let setup = Setup::with_yaml(&yaml);
    let out = setup.check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("line {line}")),
        "no `line {line}`:\n{yaml}\n{}",
        describe(&out)
    );
}

#[test]
fn an_unknown_top_level_key_is_refused_by_name() {
    let yaml = format!("listen_everywhere: true\n{}", hello_yaml());
    assert_exit_2(&assert_refused(&yaml, &["listen_everywhere"]));
}

#[test]
fn an_unknown_limit_is_refused_by_name() {
    let yaml = hello_yaml().replace("memory_mb: 32", "memory_gb: 1");
    assert_exit_2(&assert_refused(&yaml, &["memory_gb"]));
}

#[test]
fn a_grant_naming_an_unknown_capability_is_refused_by_name() {
    let yaml = hello_yaml().replace("{ kv: true,", "{ teleport: true, kv: true,");
    assert!(yaml.contains("teleport"));
    assert_exit_2(&assert_refused(&yaml, &["teleport"]));
}

#[test]
fn a_duplicate_route_is_refused() {
    let yaml = config_yaml(&[
        Plugin::hello("one").prefix("/same/"),
        Plugin::hello("two").prefix("/same/"),
    ]);
    assert_exit_2(&assert_refused(&yaml, &["/same/"]));
}

#[test]
fn the_same_prefix_on_different_listeners_is_fine() {
    let one = Plugin::hello("one").prefix("/same/");
    let mut two = Plugin::hello("two").prefix("/same/");
    two.listen = "127.0.0.2:0".to_string();
    let out = Setup::new(&[one, two]).check();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_missing_wasm_file_is_refused_naming_the_file() {
    let missing = std::env::temp_dir().join("wasmgate-e2e-does-not-exist/missing-plugin.wasm");
    let yaml = hello_yaml().replace(
        &quote(&wasm("hello").to_string_lossy()),
        &quote(&missing.to_string_lossy()),
    );
    assert!(yaml.contains("missing-plugin.wasm"));
    assert_refused(&yaml, &["missing-plugin.wasm"]);
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let setup_dir = tempfile::tempdir().expect("temp dir");
    let bogus = setup_dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm but not really").expect("write bogus wasm");
    let yaml = hello_yaml().replace(
        &quote(&wasm("hello").to_string_lossy()),
        &quote(&bogus.to_string_lossy()),
    );
    assert_refused(&yaml, &["hello"]);
}

#[test]
fn a_bad_plugin_name_is_refused() {
    let yaml = config_yaml(&[Plugin::hello("Bad Name!").prefix("/bad/")]);
    assert_exit_2(&assert_refused(&yaml, &["Bad Name!"]));
}

#[test]
fn a_relative_wasm_path_resolves_against_the_config_file() {
    // The config sits in a temp dir and names the wasm relative to it; the
    // CLI runs from a different directory.
    let setup = Setup::with_yaml("");
    let local = setup.dir().join("plugins");
    std::fs::create_dir_all(&local).expect("mkdir plugins");
    std::fs::copy(wasm("hello"), local.join("hello.wasm")).expect("copy hello.wasm");
    let mut hello = Plugin::hello("hello");
    hello.wasm = "plugins/hello.wasm".into();
    std::fs::write(&setup.config, config_yaml(&[hello])).expect("write config");
    let mut cmd = setup.command(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        setup.config.as_os_str(),
    ]);
    cmd.current_dir("/");
    let out = crate::e2e::harness::run_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_plugin_importing_a_capability_it_was_not_granted_is_refused_at_load() {
    // Grants are checked when the plugin is linked: the fixture imports kv,
    // keys, jobs... and is granted only log.
    let yaml = config_yaml(&[Plugin::fixture("fx").grants("{ log: true }")]);
    assert_refused(&yaml, &["fx", "kv"]);
}

/// A config whose plugin `hello` is the file `name` in a temp dir holding
/// `files` (name, bytes); its `check` and `serve` must both exit 2 and say
/// every one of `needles`, and `check` must say it once.
#[track_caller]
fn assert_artefact_refused(name: &str, files: &[(&str, &[u8])], needles: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (file, bytes) in files {
        std::fs::write(dir.path().join(file), bytes).expect("write file");
    }
    let yaml = hello_yaml().replace(
        &quote(&wasm("hello").to_string_lossy()),
        &quote(&dir.path().join(name).to_string_lossy()),
    );
    let outputs = assert_refused(&yaml, needles);
    assert_exit_2(&outputs);
    let check = &outputs[0];
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        all.matches(needles[0]).count(),
        1,
        "said more than once:\n{all}"
    );
}

#[test]
fn a_text_file_in_place_of_wasm_is_refused_with_the_build_command() {
    assert_artefact_refused(
        "notes.wasm",
        &[("notes.wasm", b"hello, I am not wasm\n")],
        &[
            "not a WebAssembly file",
            "cargo build --release --target wasm32-wasip2",
        ],
    );
}

#[test]
fn a_native_executable_in_place_of_wasm_is_refused_as_such() {
    assert_artefact_refused(
        "hello.wasm",
        &[("hello.wasm", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0")],
        &["native executable (ELF)", "wasm32-wasip2"],
    );
}

#[test]
fn a_core_module_is_refused_with_how_to_make_a_component() {
    // The smallest valid core module: the magic and version 1.
    assert_artefact_refused(
        "core.wasm",
        &[("core.wasm", b"\0asm\x01\0\0\0")],
        &[
            "a core WebAssembly module, not a component",
            "wasm32-wasip2",
            "wasm-tools component new",
        ],
    );
}

#[test]
fn a_crate_built_without_cdylib_is_refused_with_the_crate_type_to_add() {
    assert_artefact_refused(
        "my_plugin.wasm",
        &[("libmy_plugin.rlib", b"!<arch>\n")],
        &["crate-type = [\"cdylib\"]", "libmy_plugin.rlib"],
    );
}

#[test]
fn a_missing_artefact_is_refused_with_the_build_command() {
    assert_artefact_refused(
        "absent.wasm",
        &[],
        &[
            "no such file",
            "cargo build --release --target wasm32-wasip2",
        ],
    );
}
