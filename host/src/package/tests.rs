//! The package format (what `read` takes and refuses) and every refusal of
//! `verify`.

use semver::Version;

use super::*;
use crate::config::{Grants, TrustConfig, TrustedKey};

/// The smallest component: its header only. `read` and `verify` do not
/// look inside the component; `build`'s look is tested in `component`.
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn manifest(extra: &str, component: &[u8]) -> Manifest {
    let mut m: Manifest = serde_norway::from_str(&format!(
        "name: hello\nversion: 1.2.0\nvendor: Acme\nwit_version: {}\nmin_host_version: 0.1.0\n{extra}",
        crate::caps::wit::version()
    ))
    .unwrap();
    m.component_sha256 = sha256_hex(component);
    m
}

/// An unsigned package of [`COMPONENT`], its manifest given `extra` keys.
fn package(extra: &str) -> Package {
    let m = manifest(extra, COMPONENT);
    Package {
        manifest_bytes: m.to_canonical(),
        manifest: m,
        component: COMPONENT.to_vec(),
        signature: None,
    }
}

fn key() -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn signed(extra: &str, key: &SigningKey) -> Package {
    let mut p = package(extra);
    p.sign(key);
    p
}

fn trust(require: Option<bool>, keys: &[(&str, &SigningKey, &[&str])]) -> TrustConfig {
    TrustConfig {
        require_signature: require,
        keys: keys
            .iter()
            .map(|(name, key, plugins)| TrustedKey {
                name: name.to_string(),
                key: key.public_key(),
                plugins: plugins.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
        ..TrustConfig::default()
    }
}

/// A tar archive of `entries` as given: (name bytes, data, type).
fn tar_of(entries: &[(&[u8], &[u8], tar::EntryType)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, kind) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(*kind);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn regular<'a>(name: &'a str, data: &'a [u8]) -> (&'a [u8], &'a [u8], tar::EntryType) {
    (name.as_bytes(), data, tar::EntryType::Regular)
}

// --- the format ---

#[test]
fn a_package_round_trips_in_one_canonical_form_signed_or_not() {
    let k = key();
    for p in [
        package("grants: { kv: true }\nsettings: { greeting: hi }\n"),
        signed(
            "mounts: [{ listen: \"127.0.0.1:8081\", prefix: /hello/ }]\n",
            &k,
        ),
    ] {
        let bytes = p.to_bytes();
        let back = Package::read(&bytes).unwrap();
        assert_eq!(back.manifest(), p.manifest());
        assert_eq!(back.manifest_bytes(), p.manifest_bytes());
        assert_eq!(back.component(), COMPONENT);
        assert_eq!(back.signature(), p.signature());
        assert_eq!(back.to_bytes(), bytes);
        back.check_integrity().unwrap();
    }
}

#[test]
fn the_archive_is_a_plain_ustar_of_the_three_entries_in_order() {
    let p = signed("", &key());
    let bytes = p.to_bytes();
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<(String, u64, u32)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.size().unwrap(),
                h.mode().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                MANIFEST_ENTRY.into(),
                p.manifest_bytes().len() as u64,
                0o644
            ),
            (COMPONENT_ENTRY.into(), COMPONENT.len() as u64, 0o644),
            (
                SIGNATURE_ENTRY.into(),
                p.signature().unwrap().to_json().len() as u64,
                0o644
            ),
        ]
    );
    assert_eq!(bytes.len() % 512, 0);
    assert!(bytes.ends_with(&[0; 1024]));
    let manifest: serde_json::Value = serde_json::from_slice(p.manifest_bytes()).unwrap();
    assert_eq!(manifest["component_sha256"], sha256_hex(COMPONENT));
    assert_eq!(manifest["format"], 1);
}

#[test]
fn every_flipped_byte_of_a_signed_package_is_detected() {
    let k = key();
    let bytes = signed("grants: { kv: true }\n", &k).to_bytes();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut flipped = bytes.clone();
            flipped[i] ^= bit;
            let detected = match Package::read(&flipped) {
                Err(_) => true,
                Ok(p) => p.check_integrity().is_err(),
            };
            assert!(detected, "byte {i} ^ {bit:#x} went unnoticed");
        }
    }
}

#[test]
fn a_changed_manifest_fails_the_signature_and_a_changed_component_the_hash() {
    let k = key();
    let p = signed("", &k);
    let bytes = p.to_bytes();
    // A letter of the vendor's name: still a valid, canonical manifest.
    let at = bytes.windows(6).position(|w| w == b"\"Acme\"").unwrap() + 1;
    let mut m = bytes.clone();
    m[at] = b'B';
    let read = Package::read(&m).unwrap();
    assert_eq!(read.manifest().vendor, "Bcme");
    assert!(matches!(
        read.check_integrity(),
        Err(Refusal::BadSignature { key, .. }) if key == k.public_key()
    ));
    let at = bytes
        .windows(COMPONENT.len())
        .position(|w| w == COMPONENT)
        .unwrap()
        + 7;
    let mut c = bytes.clone();
    c[at] ^= 1;
    let read = Package::read(&c).unwrap();
    let e = read.check_integrity().unwrap_err();
    assert!(
        matches!(&e, Refusal::TamperedComponent { expected, actual, .. }
            if *expected == sha256_hex(COMPONENT) && *actual == sha256_hex(read.component())),
        "{e}"
    );
}

#[test]
fn unknown_duplicate_misplaced_and_missing_entries_are_refused() {
    let p = signed("", &key());
    let m = p.manifest_bytes().to_vec();
    let s = p.signature().unwrap().to_json();
    let c = COMPONENT;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            tar_of(&[
                regular(MANIFEST_ENTRY, &m),
                regular(COMPONENT_ENTRY, c),
                regular("README", b"x"),
            ]),
            "unknown entry \"README\"",
        ),
        (
            tar_of(&[regular(MANIFEST_ENTRY, &m), regular(MANIFEST_ENTRY, &m)]),
            "entry manifest.json is there twice",
        ),
        (
            tar_of(&[
                regular(MANIFEST_ENTRY, &m),
                regular(COMPONENT_ENTRY, c),
                regular(SIGNATURE_ENTRY, &s),
                regular(SIGNATURE_ENTRY, &s),
            ]),
            "entry signature.json is there twice",
        ),
        (
            tar_of(&[regular(COMPONENT_ENTRY, c), regular(MANIFEST_ENTRY, &m)]),
            "entry component.wasm comes before manifest.json",
        ),
        (
            tar_of(&[regular(MANIFEST_ENTRY, &m), regular(SIGNATURE_ENTRY, &s)]),
            "entry signature.json comes before component.wasm",
        ),
        (tar_of(&[regular(MANIFEST_ENTRY, &m)]), "no component.wasm"),
        (tar_of(&[]), "no manifest.json"),
        (Vec::new(), "no manifest.json"),
    ];
    for (bytes, needle) in cases {
        let e = Package::read(&bytes).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn path_tricks_links_and_extended_headers_are_refused() {
    let p = package("");
    let m = p.manifest_bytes().to_vec();
    for name in [
        "./manifest.json",
        "../manifest.json",
        "/manifest.json",
        "x/../manifest.json",
        "manifest.json/",
        "MANIFEST.JSON",
    ] {
        let bytes = tar_of(&[regular(name, &m), regular(COMPONENT_ENTRY, COMPONENT)]);
        let e = Package::read(&bytes).unwrap_err();
        assert!(
            matches!(e, PackageError::UnknownEntry { .. }),
            "{name}: {e}"
        );
    }
    for kind in [
        tar::EntryType::Symlink,
        tar::EntryType::Link,
        tar::EntryType::Directory,
        tar::EntryType::XHeader,
        tar::EntryType::GNULongName,
    ] {
        let bytes = tar_of(&[
            (MANIFEST_ENTRY.as_bytes(), &m, kind),
            regular(COMPONENT_ENTRY, COMPONENT),
        ]);
        let e = Package::read(&bytes).unwrap_err();
        assert!(
            matches!(&e, PackageError::NotAFile { name } if name == MANIFEST_ENTRY),
            "{kind:?}: {e}"
        );
    }
    // A PAX header naming the next entry `manifest.json` is refused as an
    // unknown entry itself, not interpreted.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", MANIFEST_ENTRY.as_bytes())])
        .unwrap();
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024);
    bytes.extend(tar_of(&[
        regular("x", &m),
        regular(COMPONENT_ENTRY, COMPONENT),
    ]));
    assert!(Package::read(&bytes).is_err());
}

#[test]
fn every_size_is_bounded_before_it_is_read() {
    // Declared sizes past the bounds, with no data behind them.
    for (name, max) in [
        (MANIFEST_ENTRY, MAX_MANIFEST_BYTES),
        (COMPONENT_ENTRY, MAX_COMPONENT_BYTES),
        (SIGNATURE_ENTRY, MAX_SIGNATURE_BYTES),
    ] {
        let m = package("").manifest_bytes().to_vec();
        let entries = [
            regular(MANIFEST_ENTRY, &m),
            regular(COMPONENT_ENTRY, COMPONENT),
        ];
        let at = entries.iter().position(|(n, ..)| *n == name.as_bytes());
        let mut bytes = tar_of(&entries[..at.unwrap_or(entries.len())]);
        bytes.truncate(bytes.len() - 1024);
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(max + 1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        let e = Package::read(&bytes).unwrap_err();
        assert!(
            matches!(e, PackageError::EntryTooLarge { name: n, size, max: m } if n == name && size == max + 1 && m == max),
            "{name}: {e}"
        );
    }
    let huge = vec![0u8; MAX_PACKAGE_BYTES as usize + 1];
    assert!(matches!(
        Package::read(&huge),
        Err(PackageError::TooLarge { .. })
    ));
}

#[test]
fn a_truncated_package_is_refused_as_cut_short() {
    let bytes = signed("", &key()).to_bytes();
    let component_data = 512 + package("").manifest_bytes().len().div_ceil(512) * 512 + 512;
    let e = Package::read(&bytes[..component_data + 3]).unwrap_err();
    assert!(
        e.to_string()
            .contains("entry component.wasm is cut short (3 of its 8 bytes)"),
        "{e}"
    );
    for len in [0, 100, 512, bytes.len() - 1024, bytes.len() - 1] {
        assert!(Package::read(&bytes[..len]).is_err(), "{len} bytes");
    }
}

#[test]
fn anything_but_the_canonical_form_is_refused() {
    let p = package("");
    let bytes = p.to_bytes();
    // Trailing bytes, a record padded to 10240 as GNU tar writes it.
    for extra in [
        &b"x"[..],
        &[0u8; 512][..],
        &vec![0u8; 10240 - bytes.len() % 10240][..],
    ] {
        let mut longer = bytes.clone();
        longer.extend_from_slice(extra);
        assert!(
            matches!(Package::read(&longer), Err(PackageError::NotCanonical(_))),
            "{} bytes more",
            extra.len()
        );
    }
    // The same manifest, written compactly.
    let compact = serde_json::to_vec(p.manifest()).unwrap();
    let e = Package::read(&tar_of(&[
        regular(MANIFEST_ENTRY, &compact),
        regular(COMPONENT_ENTRY, COMPONENT),
    ]))
    .unwrap_err();
    assert!(matches!(e, PackageError::NotCanonical(_)), "{e}");
    // A header field wasmgate leaves zero: the time.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        (MANIFEST_ENTRY, p.manifest_bytes()),
        (COMPONENT_ENTRY, COMPONENT),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let e = Package::read(&b.into_inner().unwrap()).unwrap_err();
    assert!(matches!(e, PackageError::NotCanonical(_)), "{e}");
}

#[test]
fn a_bad_manifest_or_signature_entry_is_refused_with_the_reason() {
    let p = package("");
    let m = p.manifest_bytes().to_vec();
    let bad_name = String::from_utf8(m.clone())
        .unwrap()
        .replace("\"hello\"", "\"Hello\"");
    let unknown = String::from_utf8(m.clone())
        .unwrap()
        .replace("\"vendor\"", "\"colour\": 1,\n  \"vendor\"");
    for (manifest, needle) in [
        (&b"not json"[..], "manifest: expected"),
        (
            bad_name.as_bytes(),
            "manifest: name: `Hello` is not a valid name",
        ),
        (unknown.as_bytes(), "unknown field `colour`"),
    ] {
        let e = Package::read(&tar_of(&[
            regular(MANIFEST_ENTRY, manifest),
            regular(COMPONENT_ENTRY, COMPONENT),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let k = key().public_key();
    for (sig, needle) in [
        (
            format!("{{\"key\":\"{k}\",\"signature\":\"AAAA\"}}"),
            "64-byte",
        ),
        (format!("{{\"key\":\"{k}\"}}"), "missing field `signature`"),
        (
            format!("{{\"key\":\"{k}\",\"signature\":\"\",\"by\":1}}"),
            "unknown field `by`",
        ),
        (
            "{\"key\":\"ed25519:AAAA\",\"signature\":\"\"}".into(),
            "32 bytes",
        ),
    ] {
        let e = Package::read(&tar_of(&[
            regular(MANIFEST_ENTRY, &m),
            regular(COMPONENT_ENTRY, COMPONENT),
            regular(SIGNATURE_ENTRY, sig.as_bytes()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("signature.json: ") && e.contains(needle),
            "{needle}: {e}"
        );
    }
}

#[test]
fn signing_again_replaces_the_signature() {
    let (a, b) = (key(), key());
    let mut p = signed("", &a);
    assert_eq!(p.sign(&b), Some(a.public_key()));
    let back = Package::read(&p.to_bytes()).unwrap();
    assert_eq!(back.signature().unwrap().key, b.public_key());
    back.check_integrity().unwrap();
}

#[test]
fn build_writes_the_hash_itself_and_refuses_what_is_no_component() {
    let mut m = manifest("", COMPONENT);
    let e = Package::build(m.clone(), COMPONENT.to_vec()).unwrap_err();
    assert!(
        e.to_string()
            .contains("component_sha256: is written by build"),
        "{e}"
    );
    m.component_sha256.clear();
    let e = Package::build(m.clone(), b"\0asm\x01\0\0\0".to_vec()).unwrap_err();
    assert!(matches!(e, PackageError::Component(_)), "{e}");
    // The component here exports no handler: refused, naming it.
    let e = Package::build(m, COMPONENT.to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("handler"), "{e}");
}

#[test]
fn a_package_file_is_replaced_whole_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.wgpkg");
    let p = package("");
    p.write_file(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let q = signed("", &key());
    q.write_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), q.to_bytes());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left");
    assert_eq!(load(&path).unwrap().to_bytes(), q.to_bytes());
}

// --- verify: each rule ---

#[test]
fn an_unsigned_package_passes_only_when_trust_asks_for_no_signature() {
    let v = package("")
        .verify(&TrustConfig::default(), None, None, false)
        .unwrap();
    assert_eq!(
        v,
        Verified {
            signer: None,
            key: None,
            downgrade: false
        }
    );
    let k = key();
    for t in [trust(None, &[("acme", &k, &[])]), trust(Some(true), &[])] {
        let e = package("").verify(&t, None, None, false).unwrap_err();
        assert_eq!(
            e,
            Refusal::MissingSignature {
                plugin: "hello".into(),
                pinned_to: None
            }
        );
        assert!(
            e.to_string().contains("trust.require_signature is on"),
            "{e}"
        );
    }
    package("")
        .verify(&trust(Some(false), &[("acme", &k, &[])]), None, None, false)
        .unwrap();
}

#[test]
fn a_pinned_name_needs_its_keys_signature_even_when_signatures_are_optional() {
    let (acme, other) = (key(), key());
    let t = trust(
        Some(false),
        &[("acme", &acme, &["hello"]), ("other", &other, &[])],
    );
    let e = package("").verify(&t, None, None, false).unwrap_err();
    assert_eq!(
        e,
        Refusal::MissingSignature {
            plugin: "hello".into(),
            pinned_to: Some("acme".into())
        }
    );
    assert!(e.to_string().contains("pinned to key `acme`"), "{e}");

    let e = signed("", &other)
        .verify(&t, None, None, false)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::PinnedToAnotherKey {
            plugin: "hello".into(),
            pinned_to: "acme".into(),
            signed_by: "`other`".into()
        }
    );
    let stranger = key();
    let e = signed("", &stranger)
        .verify(&t, None, None, false)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::PinnedToAnotherKey {
            plugin: "hello".into(),
            pinned_to: "acme".into(),
            signed_by: stranger.public_key().to_string()
        }
    );
    let v = signed("", &acme).verify(&t, None, None, false).unwrap();
    assert_eq!(v.signer.as_deref(), Some("acme"));
    assert_eq!(v.key, Some(acme.public_key()));
}

#[test]
fn a_key_listed_for_some_names_signs_only_those() {
    let acme = key();
    let t = trust(None, &[("acme", &acme, &["billing", "reports"])]);
    let e = signed("", &acme).verify(&t, None, None, false).unwrap_err();
    assert_eq!(
        e,
        Refusal::KeyNotForPlugin {
            plugin: "hello".into(),
            key: "acme".into(),
            plugins: vec!["billing".into(), "reports".into()]
        }
    );
    assert!(
        e.to_string().contains("may sign only billing, reports"),
        "{e}"
    );
}

#[test]
fn an_unlisted_signer_is_refused_when_signatures_are_required_else_taken_as_unvouched() {
    let (acme, stranger) = (key(), key());
    let p = signed("", &stranger);
    let e = p
        .verify(&trust(None, &[("acme", &acme, &[])]), None, None, false)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::UntrustedKey {
            plugin: "hello".into(),
            key: stranger.public_key()
        }
    );
    assert!(e.to_string().contains("not a trusted key"), "{e}");
    let v = p
        .verify(
            &trust(Some(false), &[("acme", &acme, &[])]),
            None,
            None,
            false,
        )
        .unwrap();
    assert_eq!(v.signer, None);
    assert_eq!(v.key, Some(stranger.public_key()));
}

#[test]
fn a_bad_signature_or_a_tampered_component_is_refused_whatever_the_trust() {
    let acme = key();
    let mut p = signed("", &acme);
    if let Some(sig) = &mut p.signature {
        sig.signature[0] ^= 1;
    }
    for t in [TrustConfig::default(), trust(None, &[("acme", &acme, &[])])] {
        let e = p.verify(&t, None, None, false).unwrap_err();
        assert_eq!(
            e,
            Refusal::BadSignature {
                plugin: "hello".into(),
                key: acme.public_key()
            }
        );
    }
    // Signed by another key than the one the signature names.
    let mut p = signed("", &acme);
    let other = key();
    if let Some(sig) = &mut p.signature {
        sig.key = other.public_key();
    }
    assert!(matches!(
        p.verify(&TrustConfig::default(), None, None, false),
        Err(Refusal::BadSignature { .. })
    ));

    let mut p = signed("", &acme);
    p.component.push(0);
    let e = p
        .verify(&trust(None, &[("acme", &acme, &[])]), None, None, false)
        .unwrap_err();
    assert!(matches!(e, Refusal::TamperedComponent { .. }), "{e}");
    assert!(e.to_string().contains("changed after packaging"), "{e}");
}

#[test]
fn a_wit_version_or_host_version_this_host_cannot_serve_is_refused() {
    let host_wit = Version::parse(crate::caps::wit::version()).unwrap();
    let mut next_minor = host_wit.clone();
    next_minor.minor += 1;
    let mut next_patch = host_wit.clone();
    next_patch.patch += 1;
    let mut older_line = host_wit.clone();
    older_line.minor = older_line.minor.saturating_sub(1);
    for wit in [next_minor, next_patch, older_line] {
        if wit == host_wit {
            continue;
        }
        let mut p = package("");
        p.manifest.wit_version = wit.clone();
        let e = p
            .verify(&TrustConfig::default(), None, None, false)
            .unwrap_err();
        assert_eq!(
            e,
            Refusal::WitUnsupported {
                plugin: "hello".into(),
                wit: wit.clone(),
                host: host_wit.clone()
            }
        );
        assert!(e.to_string().contains("rebuild it against"), "{e}");
    }
    let mut p = package("");
    p.manifest.min_host_version = Version::new(99, 0, 0);
    let e = p
        .verify(&TrustConfig::default(), None, None, false)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::HostTooOld {
            plugin: "hello".into(),
            needs: Version::new(99, 0, 0),
            host: Version::parse(env!("CARGO_PKG_VERSION")).unwrap()
        }
    );
    let mut p = package("");
    p.manifest.min_host_version = Version::parse(env!("CARGO_PKG_VERSION")).unwrap();
    p.verify(&TrustConfig::default(), None, None, false)
        .unwrap();
}

#[test]
fn grants_beyond_the_approved_ones_are_refused_naming_each_capability() {
    let p = package("grants: { kv: true, log: true, outbound: { hosts: [api.example.com] } }\n");
    let approved: Grants = serde_norway::from_str("{ kv: true }").unwrap();
    let e = p
        .verify(&TrustConfig::default(), Some(&approved), None, false)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::GrantsBeyondApproved {
            plugin: "hello".into(),
            capabilities: vec!["log", "outbound"]
        }
    );
    assert!(e.to_string().contains("log, outbound"), "{e}");
    let approved: Grants = serde_norway::from_str(
        "{ kv: true, log: true, config: true, outbound: { hosts: [api.example.com, b.example] } }",
    )
    .unwrap();
    p.verify(&TrustConfig::default(), Some(&approved), None, false)
        .unwrap();
    p.verify(&TrustConfig::default(), None, None, false)
        .unwrap();
}

#[test]
fn an_older_version_than_installed_is_refused_unless_forced() {
    let p = package("");
    let t = TrustConfig::default();
    let newer = Version::new(1, 10, 0);
    let e = p.verify(&t, None, Some(&newer), false).unwrap_err();
    assert_eq!(
        e,
        Refusal::Downgrade {
            plugin: "hello".into(),
            installed: newer.clone(),
            package: Version::new(1, 2, 0)
        }
    );
    assert!(
        e.to_string()
            .contains("1.2.0 is older than the installed 1.10.0"),
        "{e}"
    );
    assert!(p.verify(&t, None, Some(&newer), true).unwrap().downgrade);
    for installed in [
        Version::new(1, 2, 0),
        Version::new(1, 1, 9),
        Version::parse("1.2.0-rc.1").unwrap(),
    ] {
        let v = p.verify(&t, None, Some(&installed), false).unwrap();
        assert!(!v.downgrade, "{installed}");
    }
}

#[test]
fn integrity_comes_before_trust_and_trust_before_the_operators_say() {
    let (acme, stranger) = (key(), key());
    let t = trust(None, &[("acme", &acme, &[])]);
    let approved = Grants::default();
    let newer = Version::new(9, 0, 0);
    let mut p = signed("grants: { kv: true }\n", &stranger);
    p.manifest.min_host_version = Version::new(99, 0, 0);
    assert!(matches!(
        p.verify(&t, Some(&approved), Some(&newer), false),
        Err(Refusal::UntrustedKey { .. })
    ));
    p.component.push(0);
    assert!(matches!(
        p.verify(&t, Some(&approved), Some(&newer), false),
        Err(Refusal::TamperedComponent { .. })
    ));
    let mut p = signed("grants: { kv: true }\n", &acme);
    p.manifest.min_host_version = Version::new(99, 0, 0);
    assert!(matches!(
        p.verify(&t, Some(&approved), Some(&newer), false),
        Err(Refusal::HostTooOld { .. })
    ));
}
