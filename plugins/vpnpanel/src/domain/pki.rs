//! The panel's OpenVPN PKI: its own certificate authority, a client
//! certificate per user, server certificates for the main server and the
//! nodes, and the certificate revocation list (CRL).
//!
//! All keys are ECDSA P-256 (what OpenVPN with OpenSSL takes everywhere;
//! servers use `dh none`, i.e. ECDHE), certificates X.509 v3 signed with
//! SHA-256, made inside the plugin (`rcgen` over the pure-Rust `p256`);
//! private keys come from the host's RNG and stay in the plugin's kv.
//!
//! - The CA is made at first need (a download, the admin surface) in one
//!   transaction, so two first requests cannot make two CAs: `meta/ca`.
//!   Ten years.
//! - A user's client certificate (CN = username, clientAuth) is made at its
//!   first download, `cert/<username>`. Revoke puts the old one on the CRL
//!   at once and queues the job that makes the new one; until it ran,
//!   downloads answer 503 with `Retry-After`. Deleting a user puts its
//!   certificate on the CRL.
//! - The CRL lists every revoked certificate (`crl/<serial>`) and, on
//!   hold (reason certificateHold), the current certificate of every user
//!   that may not connect now (disabled, limited, expired, suspended), so an
//!   OpenVPN server with `crl-verify` refuses them until they are active
//!   again. It is made fresh on each request and valid for seven days: a
//!   server fetches it again well within that (the admin surface
//!   `GET /openvpn/crl`, a node `GET /api/v1/traffic/openvpn`).

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey as EcKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    RevocationReason, RevokedCertParams, SerialNumber, SignatureAlgorithm, SigningKey,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use wasmgate_sdk::{crypto, kv};

use crate::fail::{self, Fail};
use crate::store::pki::{CA_KEY, Ca, Leaf, cert_key, crl_key, srvcert_key};
use crate::store::{self, users::User};
use crate::util;

const CA_YEARS: i64 = 10;

const LEAF_YEARS: i64 = 5;

const CRL_DAYS: i64 = 7;

const DAY: i64 = 86_400;

/// An ECDSA P-256 key for rcgen.
#[derive(Clone)]
pub struct Key {
    secret: EcKey,
    /// The public point, uncompressed SEC1 (what X.509 carries).
    point: Vec<u8>,
}

impl Key {
    /// The key of a 32-byte secret; None for the rare bytes that are not a
    /// valid scalar.
    pub fn from_secret(bytes: &[u8]) -> Option<Key> {
        let secret = EcKey::from_slice(bytes).ok()?;
        Some(Key::of(secret))
    }

    fn of(secret: EcKey) -> Key {
        let point = secret
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Key { secret, point }
    }

    /// A fresh key from the host's RNG.
    pub fn generate() -> Key {
        loop {
            if let Some(k) = Key::from_secret(&crypto::random_bytes(32)) {
                return k;
            }
        }
    }

    pub fn from_pem(pem: &str) -> Option<Key> {
        EcKey::from_pkcs8_pem(pem).ok().map(Key::of)
    }

    /// PKCS#8 PEM, as OpenVPN's `<key>` takes it.
    pub fn pem(&self) -> String {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .unwrap_or_default()
    }

    /// RFC 7093 method 1: the first 160 bits of the SHA-256 of the public key.
    fn id(&self) -> Vec<u8> {
        Sha256::digest(&self.point)[..20].to_vec()
    }
}

impl PublicKeyData for Key {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for Key {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature: Signature = self.secret.sign(msg);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

fn at(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A positive 16-byte serial from `bytes`.
fn serial(bytes: &[u8]) -> SerialNumber {
    let mut b = bytes[..16].to_vec();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len()
        .is_multiple_of(2)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect()
        })
        .flatten()
}

fn ca_params(key: &Key, serial_hex: &str, not_before: u64, not_after: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "wasmgate vpnpanel CA");
    dn.push(DnType::OrganizationName, "vpnpanel");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = unhex(serial_hex).map(|b| SerialNumber::from_slice(&b));
    p.not_before = at(not_before);
    p.not_after = at(not_after);
    p.key_identifier_method = KeyIdMethod::PreSpecified(key.id());
    p
}

impl Ca {
    /// A new CA with `key`, valid from `now`.
    pub fn make(key: &Key, serial_bytes: &[u8], now: u64) -> Result<Ca, rcgen::Error> {
        let serial_hex = crypto::hex(&serial(serial_bytes).to_bytes());
        let not_before = now.saturating_sub(3_600);
        let not_after = now + (CA_YEARS * 365 * DAY) as u64;
        let cert = ca_params(key, &serial_hex, not_before, not_after).self_signed(key)?;
        Ok(Ca {
            key_pem: key.pem(),
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_before,
            not_after,
        })
    }

    fn issuer(&self) -> Option<Issuer<'static, Key>> {
        let key = Key::from_pem(&self.key_pem)?;
        Some(Issuer::new(
            ca_params(&key, &self.serial, self.not_before, self.not_after),
            key,
        ))
    }

    /// A certificate and key for `cn`: a client's (`server` false) or a
    /// server's.
    pub fn issue(
        &self,
        cn: &str,
        server: bool,
        key: &Key,
        serial_bytes: &[u8],
        now: u64,
    ) -> Result<Leaf, rcgen::Error> {
        let issuer = self.issuer().ok_or(rcgen::Error::CouldNotParseKeyPair)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let sn = serial(serial_bytes);
        p.serial_number = Some(sn.clone());
        p.not_before = at(now.saturating_sub(3_600));
        p.not_after = at((now + (LEAF_YEARS * 365 * DAY) as u64).min(self.not_after));
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::PreSpecified(key.id());
        let cert = p.signed_by(key, &issuer)?;
        Ok(Leaf {
            serial: crypto::hex(&sn.to_bytes()),
            cert_pem: cert.pem(),
            key_pem: key.pem(),
        })
    }

    /// The CRL: `revoked` for good, `held` on hold, as of `now`.
    pub fn crl(
        &self,
        revoked: &[(String, u64)],
        held: &[String],
        number: u64,
        now: u64,
    ) -> Result<String, rcgen::Error> {
        let issuer = self.issuer().ok_or(rcgen::Error::CouldNotParseKeyPair)?;
        let entry = |serial: &str, when: u64, reason| {
            Some(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&unhex(serial)?),
                revocation_time: at(when),
                reason_code: Some(reason),
                invalidity_date: None,
            })
        };
        let mut revoked_certs: Vec<RevokedCertParams> = revoked
            .iter()
            .filter_map(|(s, when)| entry(s, *when, RevocationReason::Superseded))
            .collect();
        revoked_certs.extend(
            held.iter()
                .filter_map(|s| entry(s, now, RevocationReason::CertificateHold)),
        );
        let key = Key::from_pem(&self.key_pem).ok_or(rcgen::Error::CouldNotParseKeyPair)?;
        CertificateRevocationListParams {
            this_update: at(now.saturating_sub(60)),
            next_update: at(now + (CRL_DAYS * DAY) as u64),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(key.id()),
        }
        .signed_by(&issuer)?
        .pem()
    }
}

fn pki_error(e: rcgen::Error) -> Fail {
    fail::internal(format!("certificate: {e}"))
}

/// The panel's CA, made on first use.
pub fn ca() -> Result<Ca, Fail> {
    if let Some(ca) = kv::get_json::<Ca>(CA_KEY)? {
        return Ok(ca);
    }
    let fresh = Ca::make(
        &Key::generate(),
        &crypto::random_bytes(16),
        util::now_secs(),
    )
    .map_err(pki_error)?;
    Ok(kv::transaction(|txn| {
        match txn.get_json::<Ca>(CA_KEY)? {
            Some(ca) => Ok(ca),
            None => {
                txn.set_json(CA_KEY, &fresh)?;
                Ok(fresh.clone())
            }
        }
    })?)
}

/// A new certificate for `cn`.
pub fn issue(cn: &str, server: bool) -> Result<Leaf, Fail> {
    ca()?
        .issue(
            cn,
            server,
            &Key::generate(),
            &crypto::random_bytes(16),
            util::now_secs(),
        )
        .map_err(pki_error)
}

/// What a download finds in one consistent read of the user and its
/// certificate.
enum Found {
    /// The user at that key was revoked or deleted since it was loaded.
    Stale,
    Missing,
    Leaf(Leaf),
}

/// The user's current client certificate, made when it has none; None when
/// the user's record at `key` no longer has `u`'s token or waits for a
/// re-issue. The user and the certificate are read in one transaction, so a
/// download that raced a revoke never hands out the certificate the revoke's
/// job made for the holder of the new token.
pub fn client_leaf(key: &str, u: &User) -> Result<Option<Leaf>, Fail> {
    let cert = cert_key(&u.username);
    let mut fresh: Option<Leaf> = None;
    loop {
        let found = kv::transaction(|txn| {
            let current = txn
                .get_json::<User>(key)?
                .is_some_and(|now| now.token == u.token && now.cert_issued >= now.cert_generation);
            if !current {
                return Ok(Found::Stale);
            }
            match (txn.get_json::<Leaf>(&cert)?, &fresh) {
                (Some(leaf), _) => Ok(Found::Leaf(leaf)),
                (None, Some(made)) => {
                    txn.set_json(&cert, made)?;
                    Ok(Found::Leaf(made.clone()))
                }
                (None, None) => Ok(Found::Missing),
            }
        })?;
        match found {
            Found::Stale => return Ok(None),
            Found::Leaf(leaf) => return Ok(Some(leaf)),
            // Signing stays out of the transaction; the next round stores it.
            Found::Missing => fresh = Some(issue(&u.username, false)?),
        }
    }
}

/// Puts the user's current certificate on the CRL and forgets it, in
/// `txn` (revoke, delete).
pub fn revoke_in(txn: &kv::Txn, username: &str) -> Result<(), wasmgate_sdk::Error> {
    if let Some(leaf) = txn.get_json::<Leaf>(&cert_key(username))? {
        txn.set_json(&crl_key(&leaf.serial), &util::now_secs())?;
        txn.delete(&cert_key(username))?;
    }
    Ok(())
}

/// The certificate job: makes the new certificate of the user at `key` for
/// revoke number `generation` and stamps `cert_issued`, in one transaction
/// with the user's record, so a user deleted or revoked again meanwhile
/// gets nothing (false).
pub fn reissue(key: &str, username: &str, generation: u64) -> Result<bool, Fail> {
    let fresh = issue(username, false)?;
    Ok(kv::transaction(|txn| {
        let Some(mut u) = txn.get_json::<User>(key)? else {
            return Ok(false);
        };
        if u.cert_generation != generation || u.cert_issued >= generation {
            return Ok(false);
        }
        revoke_in(txn, username)?;
        txn.set_json(&cert_key(username), &fresh)?;
        u.cert_issued = generation;
        store::users::put_user(txn, key, &u)?;
        Ok(true)
    })?)
}

/// The CRL as of now (see the module docs).
pub fn crl_pem() -> Result<String, Fail> {
    let ca = ca()?;
    let revoked: Vec<(String, u64)> = kv::list_json::<u64>("crl/")?
        .into_iter()
        .map(|(k, when)| (k.trim_start_matches("crl/").to_string(), when))
        .collect();
    let mut held = Vec::new();
    let mut inactive = Vec::new();
    store::users::for_each_user("u/", |_, u| {
        if !u.is_active() {
            inactive.push(u.username);
        }
        Ok(())
    })?;
    for name in inactive {
        if let Some(leaf) = kv::get_json::<Leaf>(&cert_key(&name))? {
            held.push(leaf.serial);
        }
    }
    let now = util::now_secs();
    ca.crl(&revoked, &held, now, now).map_err(pki_error)
}

/// Server `server`'s certificate and key (`main`, `node_<id>`), made once
/// per server.
pub fn server_leaf(server: &str) -> Result<Leaf, Fail> {
    let key = srvcert_key(server);
    let leaf = match kv::get_json::<Leaf>(&key)? {
        Some(leaf) => leaf,
        None => {
            let fresh = issue(server, true)?;
            kv::transaction(|txn| match txn.get_json::<Leaf>(&key)? {
                Some(leaf) => Ok(leaf),
                None => {
                    txn.set_json(&key, &fresh)?;
                    Ok(fresh.clone())
                }
            })?
        }
    };
    Ok(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn key(seed: u8) -> Key {
        Key::from_secret(&[seed; 32]).expect("a valid scalar")
    }

    fn der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        p.contents
    }

    #[test]
    fn the_ca_signs_itself_and_its_client_and_server_certificates() {
        let now = 1_800_000_000;
        let ca = Ca::make(&key(1), &[7; 16], now).expect("CA");
        let ca_der = der(&ca.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("CA parses");
        assert!(ca_cert.is_ca());
        ca_cert.verify_signature(None).expect("self-signed");
        assert_eq!(
            ca_cert.subject().to_string(),
            "CN=wasmgate vpnpanel CA, O=vpnpanel"
        );

        let client = ca
            .issue("alice", false, &key(2), &[9; 16], now)
            .expect("client");
        let client_der = der(&client.cert_pem);
        let (_, cert) = X509Certificate::from_der(&client_der).expect("client parses");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(cert.subject().to_string(), "CN=alice");
        assert_eq!(cert.issuer(), ca_cert.subject());
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        assert!(!cert.is_ca());
        assert!(
            Key::from_pem(&client.key_pem).is_some(),
            "the key is PKCS#8 PEM"
        );

        let server = ca
            .issue("main", true, &key(3), &[10; 16], now)
            .expect("server");
        let server_der = der(&server.cert_pem);
        let (_, cert) = X509Certificate::from_der(&server_der).expect("server parses");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );

        // The issuer rebuilt from kv signs the same way: a second leaf verifies too.
        let again = ca
            .issue("bob", false, &key(4), &[11; 16], now + 10)
            .expect("client");
        let again_der = der(&again.cert_pem);
        let (_, cert) = X509Certificate::from_der(&again_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_ne!(client.serial, again.serial);
    }

    #[test]
    fn the_crl_lists_revoked_and_held_serials() {
        let now = 1_800_000_000;
        let ca = Ca::make(&key(1), &[7; 16], now).expect("CA");
        let a = ca.issue("a", false, &key(2), &[0x21; 16], now).unwrap();
        let b = ca.issue("b", false, &key(3), &[0x22; 16], now).unwrap();
        let pem = ca
            .crl(
                &[(a.serial.clone(), now)],
                std::slice::from_ref(&b.serial),
                5,
                now,
            )
            .expect("CRL");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        assert_eq!(p.label, "X509 CRL");
        let (_, crl) = CertificateRevocationList::from_der(&p.contents).expect("CRL parses");
        let ca_der = der(&ca.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        crl.verify_signature(ca_cert.public_key())
            .expect("signed by the CA");
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| crypto::hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![a.serial, b.serial]);
        assert!(crl.next_update().is_some());
    }

    #[test]
    fn serials_are_positive_and_hex_round_trips() {
        let s = serial(&[0xff; 16]).to_bytes();
        assert!(s[0] < 0x80 && s[0] > 0);
        assert_eq!(unhex(&crypto::hex(&s)), Some(s));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
