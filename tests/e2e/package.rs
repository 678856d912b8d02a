//! `wasmgate package`: a vendor's keygen, build, sign and inspect on the
//! real hello component, and what `verify` (and `inspect`) refuse: a
//! flipped byte in the component or the manifest, another vendor's key, no
//! signature where one is required.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::e2e::harness::{Setup, describe, wasm};
use crate::e2e::wispanel::sha256_hex;

const MANIFEST: &str = "\
name: hello
version: 1.0.0
vendor: Acme Widgets
wit_version: 0.2.2
min_host_version: 0.1.0
grants: { kv: true, config: true, log: true }
settings: { greeting: hello, max_notes: 1000 }
mounts: [{ listen: 127.0.0.1:8081, prefix: /hello/ }]
limits: { memory_mb: 32 }
";

/// A temp dir to run `wasmgate package` in, with the manifest above.
struct Vendor {
    setup: Setup,
}

impl Vendor {
    fn new() -> Vendor {
        let setup = Setup::with_yaml("plugins: []\n");
        std::fs::write(setup.dir().join("hello.yaml"), MANIFEST).expect("write the manifest");
        Vendor { setup }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.setup.dir().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["package"];
        all.extend_from_slice(args);
        self.setup.run(&all)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args`, which must exit 2 with `needle` in an `error:` line.
    #[track_caller]
    fn refused(&self, args: &[&str], needle: &str) -> Output {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error:") && l.contains(needle)),
            "{args:?}: no error line with {needle:?}: {}",
            describe(&out)
        );
        out
    }

    /// `keygen --out name`: the public key it prints.
    #[track_caller]
    fn keygen(&self, name: &str) -> String {
        let out = self.ok(&["keygen", "--out", name]);
        let key = out.trim().to_string();
        assert!(
            key.starts_with("ed25519:") && key.len() == 52 && !key.contains('\n'),
            "keygen printed {out:?}"
        );
        key
    }

    /// An unsigned package of the hello component, built as `name`.
    #[track_caller]
    fn build(&self, name: &str) {
        let hello = wasm("hello");
        let out = self.ok(&[
            "build",
            "--wasm",
            hello.to_str().unwrap(),
            "--manifest",
            "hello.yaml",
            "--out",
            name,
        ]);
        assert!(out.contains("hello 1.0.0 (unsigned)"), "{out}");
    }
}

/// Where `needle` starts in the file at `path`.
fn offset_of(path: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).expect("read the package");
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} does not hold the bytes looked for", path.display()))
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read the package");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write the package");
}

#[test]
fn keygen_build_sign_and_inspect_make_a_package_of_hello_its_vendor_signed() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    let mode = std::fs::metadata(v.path("acme.key"))
        .expect("the key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is its owner's alone");

    v.build("hello.wgpkg");
    let component = std::fs::read(wasm("hello")).expect("hello.wasm");
    let hash = sha256_hex(&component);
    let unsigned = v.ok(&["inspect", "hello.wgpkg"]);
    assert!(unsigned.contains("\nsignature: none\n"), "{unsigned}");

    let out = v.ok(&["sign", "--key", "acme.key", "hello.wgpkg"]);
    assert!(
        out.contains(&format!("hello 1.0.0 signed by {key}")),
        "{out}"
    );
    let inspect = v.ok(&["inspect", "hello.wgpkg"]);
    for line in [
        "name: hello".to_string(),
        "version: 1.0.0".to_string(),
        "vendor: Acme Widgets".to_string(),
        "wit_version: 0.2.2 (this host implements 0.2.2: supported)".to_string(),
        format!(
            "component: {} bytes, sha256 {hash} (the manifest's)",
            component.len()
        ),
        format!("signature: {key} (verifies)"),
        // The grants as a config says them.
        "grants:\n  kv: true\n  config: true\n  log: true".to_string(),
        "settings:\n  greeting: hello\n  max_notes: 1000".to_string(),
        "mounts:\n  - listen: 127.0.0.1:8081\n    prefix: /hello/".to_string(),
        "limits:\n  memory_mb: 32\n".to_string(),
    ] {
        assert!(
            inspect.contains(&line),
            "inspect lacks {line:?}:\n{inspect}"
        );
    }
    let verified = v.ok(&["verify", "hello.wgpkg", "--trust", &key]);
    assert!(
        verified.contains(&format!("ok: hello 1.0.0, signed by {key}")),
        "{verified}"
    );

    // The same bytes a second time: a package has one form.
    v.build("again.wgpkg");
    v.ok(&["sign", "--key", "acme.key", "again.wgpkg"]);
    assert_eq!(
        std::fs::read(v.path("again.wgpkg")).unwrap(),
        std::fs::read(v.path("hello.wgpkg")).unwrap()
    );
}

#[test]
fn keygen_never_replaces_a_key() {
    let v = Vendor::new();
    v.keygen("acme.key");
    let before = std::fs::read(v.path("acme.key")).unwrap();
    v.refused(&["keygen", "--out", "acme.key"], "acme.key exists");
    assert_eq!(std::fs::read(v.path("acme.key")).unwrap(), before);
}

#[test]
fn a_flipped_byte_in_the_component_is_refused_as_tampered() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    v.build("hello.wgpkg");
    v.ok(&["sign", "--key", "acme.key", "hello.wgpkg"]);
    let component = std::fs::read(wasm("hello")).unwrap();
    let path = v.path("hello.wgpkg");
    let at = offset_of(&path, &component[..64]) + component.len() / 2;
    flip(&path, at);
    v.refused(
        &["verify", "hello.wgpkg", "--trust", &key],
        "the component is not the one the manifest names",
    );
    let out = v.refused(&["inspect", "hello.wgpkg"], "changed after packaging");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NOT the manifest's"), "{stdout}");
    // The manifest is untouched, so its signature still holds.
    assert!(
        stdout.contains(&format!("signature: {key} (verifies)")),
        "{stdout}"
    );
    // Nor is such a package signed again.
    v.refused(&["sign", "--key", "acme.key", "hello.wgpkg"], "not signed");
}

#[test]
fn a_flipped_byte_in_the_manifest_breaks_the_signature() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    v.build("hello.wgpkg");
    v.ok(&["sign", "--key", "acme.key", "hello.wgpkg"]);
    let path = v.path("hello.wgpkg");
    // `Acme` becomes `@cme`: still a valid manifest, no longer the one signed.
    flip(&path, offset_of(&path, b"Acme Widgets"));
    let out = v.refused(
        &["verify", "hello.wgpkg", "--trust", &key],
        "does not verify: the manifest or the signature was changed after signing",
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let out = v.refused(&["inspect", "hello.wgpkg"], "does not verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("vendor: @cme Widgets"), "{stdout}");
    assert!(stdout.contains("(does NOT verify)"), "{stdout}");
    // Even with no key to check against.
    v.refused(&["verify", "hello.wgpkg"], "does not verify");
    // Nor does its vendor sign it again without noticing.
    v.refused(
        &["sign", "--key", "acme.key", "hello.wgpkg"],
        "does not verify",
    );
}

#[test]
fn a_package_signed_by_another_key_is_refused() {
    let v = Vendor::new();
    let acme = v.keygen("acme.key");
    let other = v.keygen("other.key");
    v.build("hello.wgpkg");
    v.ok(&["sign", "--key", "other.key", "hello.wgpkg"]);
    v.refused(
        &["verify", "hello.wgpkg", "--trust", &acme],
        &format!("signed by {other}, which is not a trusted key"),
    );
    // Under a config whose trust pins `hello` to acme, other's key being
    // listed too does not help.
    std::fs::write(
        v.path("host.yaml"),
        format!(
            "trust:\n  keys:\n    - name: acme\n      key: \"{acme}\"\n      plugins: [hello]\n    - name: other\n      key: \"{other}\"\n"
        ),
    )
    .unwrap();
    v.refused(
        &["verify", "hello.wgpkg", "--config", "host.yaml"],
        "the name is pinned to key `acme`, but the package is signed by `other`",
    );
    // Signed again by acme, replacing other's signature: taken.
    let out = v.ok(&["sign", "--key", "acme.key", "hello.wgpkg"]);
    assert!(
        out.contains(&format!("replacing the signature by {other}")),
        "{out}"
    );
    let out = v.ok(&["verify", "hello.wgpkg", "--config", "host.yaml"]);
    assert!(out.contains(&format!("signed by `acme` ({acme})")), "{out}");
}

#[test]
fn an_unsigned_package_is_refused_where_a_signature_is_required() {
    let v = Vendor::new();
    let acme = v.keygen("acme.key");
    v.build("hello.wgpkg");
    v.refused(
        &["verify", "hello.wgpkg", "--trust", &acme],
        "the package is not signed, and trust.require_signature is on",
    );
    std::fs::write(
        v.path("optional.yaml"),
        "trust: { require_signature: false }\n",
    )
    .unwrap();
    let out = v.ok(&["verify", "hello.wgpkg", "--config", "optional.yaml"]);
    assert!(out.contains("ok: hello 1.0.0, unsigned"), "{out}");
}

#[test]
fn build_refuses_a_manifest_that_does_not_describe_the_component() {
    let v = Vendor::new();
    let hello = wasm("hello");
    let hello = hello.to_str().unwrap();
    for (from, to, needle) in [
        (
            "grants: { kv: true, config: true, log: true }",
            "grants: { config: true, log: true }",
            "imports `wasmgate:plugin/kv@0.2.2` but the manifest's grants do not include it",
        ),
        (
            "wit_version: 0.2.2",
            "wit_version: 0.2.0",
            "the manifest's wit_version is 0.2.0",
        ),
        (
            "name: hello",
            "name: Hello",
            "name: `Hello` is not a valid name",
        ),
        (
            "vendor: Acme Widgets",
            "vendor: Acme\ncolour: blue",
            "unknown field `colour`",
        ),
        (
            "limits: { memory_mb: 32 }",
            "limits: { memory_mb: 9999 }",
            "limits.memory_mb: 9999 is out of range",
        ),
    ] {
        std::fs::write(v.path("bad.yaml"), MANIFEST.replace(from, to)).unwrap();
        v.refused(
            &[
                "build",
                "--wasm",
                hello,
                "--manifest",
                "bad.yaml",
                "--out",
                "bad.wgpkg",
            ],
            needle,
        );
        assert!(!v.path("bad.wgpkg").exists(), "{to}: nothing written");
    }
    // The unknown key is named with its line.
    std::fs::write(v.path("bad.yaml"), format!("{MANIFEST}colour: blue\n")).unwrap();
    v.refused(
        &[
            "build",
            "--wasm",
            hello,
            "--manifest",
            "bad.yaml",
            "--out",
            "bad.wgpkg",
        ],
        "line 10",
    );
    // A core module is no component.
    std::fs::write(v.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    v.refused(
        &[
            "build",
            "--wasm",
            "core.wasm",
            "--manifest",
            "hello.yaml",
            "--out",
            "bad.wgpkg",
        ],
        "a core WebAssembly module, not a component",
    );
}

#[test]
fn a_config_with_a_bad_trusted_key_is_refused_with_its_line() {
    let setup = Setup::with_yaml(
        "plugins: []\ntrust:\n  keys:\n    - name: acme\n      key: \"ed25519:AAAA\"\n",
    );
    let out = setup.check();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trust.keys[0]")
            && stderr.contains("an Ed25519 key is 32 bytes, this is 3")
            && stderr.contains("line 4"),
        "{}",
        describe(&out)
    );
}
