use super::*;
use crate::package::keys::SigningKey;

fn key() -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn trusted(name: &str, key: &SigningKey, plugins: &[&str]) -> TrustedKey {
    TrustedKey {
        name: name.to_string(),
        key: key.public_key(),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
    }
}

fn engine() -> EngineSettings {
    settings(64 << 20, false)
}

fn header() -> Header {
    Header {
        plugin: "hello".into(),
        component_sha256: "00".repeat(32),
        code_sha256: String::new(),
        arch: "aarch64".into(),
        target: "aarch64-unknown-linux-musl".into(),
        wasmtime: WASMTIME_VERSION.into(),
        wasmgate: "0.1.0".into(),
        engine: engine(),
    }
}

#[test]
fn a_sealed_artefact_verifies_under_its_key_and_gives_back_its_code() {
    let k = key();
    let bytes = seal(header(), b"machine code", &k);
    assert!(is_artefact(&bytes));
    let v = verify(
        &bytes,
        "hello",
        &[trusted("build", &k, &[])],
        "aarch64",
        &engine(),
    )
    .unwrap();
    assert_eq!(v.code, b"machine code");
    assert_eq!(v.signer, "build");
    assert_eq!(
        v.header.code_sha256,
        crate::util::ids::sha256_hex(b"machine code")
    );
    assert_eq!(read_header(&bytes).unwrap(), v.header);
}

#[test]
fn each_refusal_names_its_cause() {
    let k = key();
    let other = key();
    let good = seal(header(), b"machine code", &k);
    let trust = [trusted("build", &k, &[])];
    let refuse = |bytes: &[u8], trust: &[TrustedKey], arch: &str, e: &EngineSettings| {
        verify(bytes, "hello", trust, arch, e)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(refuse(&good, &[], "aarch64", &engine()).contains("trust.compilers"));
    assert!(
        refuse(&good, &[trusted("x", &other, &[])], "aarch64", &engine())
            .contains("not signed by a key listed")
    );
    assert!(
        refuse(
            &good,
            &[trusted("build", &k, &["other"])],
            "aarch64",
            &engine()
        )
        .contains("pinned to other plugins")
    );
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(refuse(&flipped, &trust, "aarch64", &engine()).contains("does not match"));
    // A changed header breaks the signature.
    let mut renamed = good.clone();
    let at = renamed.windows(5).position(|w| w == b"hello").unwrap();
    renamed[at] = b'j';
    assert!(refuse(&renamed, &trust, "aarch64", &engine()).contains("not signed"));
    let m = refuse(&good, &trust, "x86_64", &engine());
    assert!(
        m.contains("compiled for aarch64") && m.contains("runs x86_64 code"),
        "{m}"
    );
    let m = refuse(&good, &trust, "aarch64", &settings(128 << 20, false));
    assert!(
        m.contains("largest memory 64 MiB") && m.contains("largest memory 128 MiB"),
        "{m}"
    );
    let old = seal(
        Header {
            wasmtime: "40.0.0".into(),
            ..header()
        },
        b"code",
        &k,
    );
    let m = refuse(&old, &trust, "aarch64", &engine());
    assert!(
        m.contains("wasmtime 40.0.0") && m.contains(WASMTIME_VERSION),
        "{m}"
    );
    for bad in [&b"WGAOT01\n"[..], b"\0asm\x0d\0\x01\0", &good[..20]] {
        assert!(refuse(bad, &trust, "aarch64", &engine()).contains("not a wasmgate artefact"));
    }
}

#[test]
fn targets_without_cranelift_get_pulley_of_their_width_and_byte_order() {
    let t = |s: &str| code_target(s).unwrap().0;
    assert_eq!(t("aarch64-unknown-linux-musl"), "aarch64");
    assert_eq!(t("x86_64-unknown-linux-gnu"), "x86_64");
    assert_eq!(t("riscv64gc-unknown-linux-gnu"), "riscv64");
    assert_eq!(t("armv7-unknown-linux-gnueabihf"), "pulley32");
    assert_eq!(t("armv7-unknown-linux-musleabihf"), "pulley32");
    assert_eq!(t("mipsel-unknown-linux-musl"), "pulley32");
    assert_eq!(t("mips-unknown-linux-musl"), "pulley32be");
    assert_eq!(t("pulley64"), "pulley64");
    assert!(code_target("pulley16").is_err());
    assert!(code_target("vax-dec-ultrix").is_err());
}

#[test]
fn the_pinned_wasmtime_version_is_the_one_cargo_uses() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let at = lock.find("name = \"wasmtime\"\nversion = \"").unwrap();
    let rest = &lock[at + "name = \"wasmtime\"\nversion = \"".len()..];
    assert_eq!(&rest[..rest.find('"').unwrap()], WASMTIME_VERSION);
}
