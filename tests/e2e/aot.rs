//! Precompiled plugins (`wasmgate compile`) through the real binary: an
//! artefact serves without compiling; each refusal (no trusted compiler,
//! another key, a flipped byte, another architecture, other engine
//! settings) stops the load with its message; Pulley runs the same plugin.
//! The router builds run the same artefacts under qemu in
//! tests/routers/smoke.sh.

use std::path::{Path, PathBuf};

use crate::e2e::harness::{Plugin, Setup, config_yaml_with, describe};

/// A temp dir with a compile key, and the config text that trusts it.
struct Build {
    setup: Setup,
    public: String,
}

impl Build {
    fn new() -> Build {
        let setup = Setup::with_yaml("plugins: []\n");
        let key = setup.dir().join("compile.key");
        let out = setup.run(&["package", "keygen", "--out", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let at = stdout.find("ed25519:").expect("a public key");
        let public = stdout[at..].split_whitespace().next().unwrap().to_string();
        Build { setup, public }
    }

    fn trust(&self) -> String {
        format!(
            "trust:\n  compilers:\n    - {{ name: build, key: \"{}\" }}\n",
            self.public
        )
    }

    /// Compiles `plugin` under `sections` for `target` into DIR/`out`; the artefact.
    fn compile(&self, sections: &str, plugin: &Plugin, target: Option<&str>, out: &str) -> PathBuf {
        let config = self.setup.dir().join(format!("{out}.yaml"));
        std::fs::write(
            &config,
            config_yaml_with(sections, std::slice::from_ref(plugin)),
        )
        .unwrap();
        let key = self.setup.dir().join("compile.key");
        let dir = self.setup.dir().join(out);
        let mut args = vec![
            "compile",
            "--config",
            config.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ];
        if let Some(t) = target {
            args.extend(["--target", t]);
        }
        let out = self.setup.run(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let path = dir.join(format!("{}.aot", plugin.name));
        assert!(path.exists(), "{}", describe(&out));
        path
    }
}

fn with_wasm(plugin: &Plugin, wasm: &Path) -> Plugin {
    Plugin {
        wasm: wasm.to_path_buf(),
        ..plugin.clone()
    }
}

/// `wasmgate check` on `plugin` under `sections` must fail with `needle`.
#[track_caller]
fn refused(sections: &str, plugin: &Plugin, needle: &str) {
    let setup = Setup::with_yaml(&config_yaml_with(sections, std::slice::from_ref(plugin)));
    let out = setup.check();
    assert!(!out.status.success(), "accepted: {}", describe(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(needle), "no `{needle}` in: {all}");
}

#[test]
fn an_artefact_serves_without_compiling_and_every_mismatch_is_refused_by_name() {
    let build = Build::new();
    let hello = Plugin::hello("hello").settings("{ greeting: precompiled }");
    let sections = format!("runtime: {{ allocator: on_demand }}\n{}", build.trust());
    let artefact = build.compile(&sections, &hello, None, "host");
    let aot = with_wasm(&hello, &artefact);

    let setup = Setup::with_yaml(&config_yaml_with(&sections, std::slice::from_ref(&aot)));
    let check = setup.check();
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("ok (precompiled"),
        "{}",
        describe(&check)
    );
    let server = setup.serve();
    let r = server.get("/hello/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("precompiled"), "{r:?}");
    let logs = server.logs();
    assert!(logs.contains("loaded a precompiled artefact"), "{logs}");
    assert!(!logs.contains("compiling"), "{logs}");
    drop(server);

    // No compiler trusted, another key trusted.
    refused(
        "runtime: { allocator: on_demand }\n",
        &aot,
        "trust.compilers",
    );
    let other = Build::new();
    refused(
        &format!("runtime: {{ allocator: on_demand }}\n{}", other.trust()),
        &aot,
        "not signed by a key listed under `trust.compilers`",
    );
    // A flipped byte in the code.
    let mut bytes = std::fs::read(&artefact).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 1;
    let flipped = artefact.with_file_name("flipped.aot");
    std::fs::write(&flipped, &bytes).unwrap();
    refused(
        &sections,
        &with_wasm(&hello, &flipped),
        "does not match its signed header",
    );
    // Other engine settings: the pooling allocator, a larger memory.
    refused(
        &format!("runtime: {{ allocator: pooling }}\n{}", build.trust()),
        &aot,
        "allocator on_demand",
    );
    refused(
        &sections,
        &aot.clone().memory_mb(128),
        "largest memory 128 MiB",
    );
    // Another architecture.
    let arm = build.compile(&sections, &hello, Some("aarch64-unknown-linux-musl"), "arm");
    refused(&sections, &with_wasm(&hello, &arm), "compiled for aarch64");
    let pulley32 = build.compile(
        &sections,
        &hello,
        Some("armv7-unknown-linux-gnueabihf"),
        "armv7",
    );
    refused(
        &sections,
        &with_wasm(&hello, &pulley32),
        "compiled for pulley32",
    );
}

#[test]
fn pulley_runs_the_same_plugin_compiled_here_or_ahead_of_time() {
    let build = Build::new();
    let hello = Plugin::hello("hello").settings("{ greeting: interpreted }");
    let sections = format!(
        "runtime: {{ allocator: on_demand, pulley: true }}\n{}",
        build.trust()
    );
    // Compiled at load (to Pulley bytecode, cached), then ahead of time.
    let artefact = build.compile(&sections, &hello, Some("pulley64"), "pulley");
    for plugin in [hello.clone(), with_wasm(&hello, &artefact)] {
        let setup = Setup::with_yaml(&config_yaml_with(&sections, std::slice::from_ref(&plugin)));
        let server = setup.serve();
        let r = server.get("/hello/");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.text().contains("interpreted"), "{r:?}");
    }
    // A native artefact is refused by a Pulley host, naming both.
    let native = build.compile(
        "runtime: { allocator: on_demand }\n",
        &hello,
        None,
        "native",
    );
    refused(
        &sections,
        &with_wasm(&hello, &native),
        "this host runs pulley64 code",
    );
}

#[test]
fn a_bundle_serves_its_config_and_packages_without_compiling() {
    let build = Build::new();
    let dir = build.setup.dir().to_path_buf();
    let run = |args: &[&str]| {
        let out = build.setup.run(args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = |args: &[&str], needle: &str| {
        let out = build.setup.run(args);
        assert!(
            !out.status.success(),
            "{args:?} accepted: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    };
    // A vendor's signed package of hello, answering on its own mount.
    let vendor_key = dir.join("vendor.key");
    let vendor = run(&["package", "keygen", "--out", vendor_key.to_str().unwrap()]);
    let vendor_public = vendor[vendor.find("ed25519:").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let manifest = dir.join("greeter.yaml");
    std::fs::write(
        &manifest,
        "name: greeter\nversion: 1.0.0\nvendor: Acme\nwit_version: 0.2.2\nmin_host_version: 0.1.0\n\
         grants: { kv: true, config: true, log: true }\nsettings: { greeting: from a package }\n\
         mounts: [{ listen: \"127.0.0.1:0\", prefix: /greeter/ }]\n",
    )
    .unwrap();
    let package = dir.join("greeter.wgpkg");
    let hello = crate::e2e::harness::wasm("hello");
    // `wasmgate package build` of the hello component with that manifest.
    let package_build = |out: &Path| {
        run(&[
            "package",
            "build",
            "--wasm",
            hello.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    package_build(&package);
    run(&[
        "package",
        "sign",
        "--key",
        vendor_key.to_str().unwrap(),
        package.to_str().unwrap(),
    ]);

    let input = dir.join("input.yaml");
    let trust_vendor =
        format!("trust:\n  keys:\n    - {{ name: acme, key: \"{vendor_public}\" }}\n");
    std::fs::write(
        &input,
        config_yaml_with(
            &trust_vendor,
            &[Plugin::hello("hello").settings("{ greeting: from the config }")],
        ),
    )
    .unwrap();
    let key = dir.join("compile.key");
    let out = dir.join("image");
    let data = dir.join("image-data");
    let printed = run(&[
        "bundle",
        "--config",
        input.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--package",
        package.to_str().unwrap(),
        "--router-profile",
    ]);
    assert!(
        printed.contains("greeter: package 1.0.0") && printed.contains("signed by acme"),
        "{printed}"
    );
    assert!(out.join("plugins/hello.aot").exists() && out.join("plugins/greeter.aot").exists());
    assert!(out.join("packages/greeter-1.0.0.wgpkg").exists());
    let config = std::fs::read_to_string(out.join("config.yaml")).unwrap();
    assert!(
        config.contains("profile: router") && config.contains("compilers:"),
        "{config}"
    );

    // The bundled config serves both, from artefacts.
    let mut setup = Setup::with_yaml(&config);
    setup.config = out.join("config.yaml");
    setup.data_dir = data.clone();
    let server = setup.serve();
    let r = server.get("/hello/");
    assert!(r.text().contains("from the config"), "{r:?}");
    let r = server.get("/greeter/");
    assert!(r.text().contains("from a package"), "{r:?}");
    let logs = server.logs();
    assert_eq!(
        logs.matches("loaded a precompiled artefact").count(),
        2,
        "{logs}"
    );
    assert!(!logs.contains("compiling"), "{logs}");
    drop(server);

    // An unsigned package under a policy that requires signatures: refused.
    let unsigned = dir.join("unsigned.wgpkg");
    package_build(&unsigned);
    refused(
        &[
            "bundle",
            "--config",
            input.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            dir.join("image2").to_str().unwrap(),
            "--package",
            unsigned.to_str().unwrap(),
        ],
        "signature",
    );
}
