//! Vendor signing keys: Ed25519 private keys in PKCS#8 (as ring writes
//! them) in files only their owner may read, and the signatures they make
//! over a package's manifest.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::util::ed25519::PublicKey;

/// What a signature signs: this, then the manifest's bytes. The prefix
/// keeps a package signature from being valid as anything else a vendor's
/// key might sign, and names the format it belongs to.
pub const SIGNING_CONTEXT: &[u8] = b"wasmgate-package-v1\n";

/// The largest key file read: a PKCS#8 Ed25519 key is 83 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `keygen` never replaces a key: the old one may be the only copy.
    #[error("{path} exists: choose another --out (a key is never overwritten)")]
    Exists { path: String },
    /// The file is not an Ed25519 private key in PKCS#8.
    #[error("{path} is not an Ed25519 private key in PKCS#8 (wasmgate package keygen writes one)")]
    Invalid { path: String },
}

/// A vendor's private key, to sign packages with. Its `Debug` shows only
/// the public key.
pub struct SigningKey(Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}

impl SigningKey {
    /// The key in `pkcs8`; `None` when it is not an Ed25519 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<SigningKey> {
        Ed25519KeyPair::from_pkcs8(pkcs8).ok().map(SigningKey)
    }

    /// Reads the key file `path` (see [`keygen`]).
    pub fn read(path: &Path) -> anyhow::Result<SigningKey> {
        use std::io::Read as _;
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let key = SigningKey::from_pkcs8(&bytes);
        // The bytes are a secret: gone from memory as soon as they are parsed.
        bytes.fill(0);
        key.ok_or_else(|| {
            KeyError::Invalid {
                path: path.display().to_string(),
            }
            .into()
        })
    }

    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.0.public_key().as_ref());
        PublicKey::from_bytes(bytes)
    }

    /// The signature of `message`, which must start with a context of its
    /// own ([`SIGNING_CONTEXT`] for packages).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.sign(message).as_ref());
        out
    }

    /// The signature of `manifest` (a manifest's exact bytes), after
    /// [`SIGNING_CONTEXT`].
    pub fn sign_manifest(&self, manifest: &[u8]) -> [u8; 64] {
        self.sign(&signed_message(manifest))
    }
}

/// The message a package signature signs.
pub fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest].concat()
}

/// Writes a new private key to `out` (created, mode 0600; an existing file
/// is refused) and returns its public key.
pub fn keygen(out: &Path) -> anyhow::Result<PublicKey> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    let key = SigningKey::from_pkcs8(pkcs8.as_ref())
        .ok_or_else(|| anyhow::anyhow!("ring made a key it cannot read back"))?;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists {
                path: out.display().to_string(),
            }
            .into());
        }
        Err(e) => anyhow::bail!("cannot create {}: {e}", out.display()),
    };
    if let Err(e) = file
        .write_all(pkcs8.as_ref())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        let _ = std::fs::remove_file(out);
        anyhow::bail!("cannot write {}: {e}", out.display());
    }
    Ok(key.public_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keygen_writes_a_private_key_once_and_it_signs_for_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vendor.key");
        let public = keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = SigningKey::read(&path).unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(format!("{key:?}"), format!("SigningKey({public})"));
        let sig = key.sign_manifest(b"{}");
        assert!(public.verifies(&signed_message(b"{}"), &sig));
        assert!(
            !public.verifies(b"{}", &sig),
            "the context is part of the message"
        );

        let before = std::fs::read(&path).unwrap();
        let e = keygen(&path).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(KeyError::Exists { .. })),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");
    }

    #[test]
    fn a_file_that_is_no_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not.key");
        std::fs::write(&path, b"ed25519:AAAA").unwrap();
        let e = SigningKey::read(&path).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(KeyError::Invalid { .. })),
            "{e}"
        );
        let e = SigningKey::read(&dir.path().join("missing.key")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
