//! `crypto`: hashing, HMAC, password hashing, signatures and randomness,
//! run natively with ring.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::{digest, hmac, pbkdf2, signature};
use tokio::sync::Semaphore;
use wasmtime::component::{HasData, Linker};

use super::wit::crypto::{HmacAlgorithm, Host};
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv};
use crate::util::ids::random;

pub struct Crypto;

impl Capability for Crypto {
    const NAME: &'static str = "crypto";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    /// The host's threads for expensive calls (`runtime.blocking_threads`).
    type State = Arc<Semaphore>;
    /// The plugin's share of them: at most half, at least one.
    type PluginState = Arc<Semaphore>;

    fn state(env: &HostEnv) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(env.blocking_threads.max(1)))
    }

    fn plugin_state(env: &PluginEnv<'_>, _: &bool) -> Arc<Semaphore> {
        Arc::new(Semaphore::new((env.blocking_threads / 2).max(1)))
    }

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::crypto::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the grant, the blocking pool and the call's deadline.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    host_threads: &'a Arc<Semaphore>,
    deadline: Instant,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            host_threads: &call.host.crypto,
            deadline: call.deadline,
        }
    }

    fn granted(&self) -> wasmtime::Result<()> {
        if !self.plugin.grants.crypto {
            return Err(self.plugin.not_granted(Crypto::NAME));
        }
        Ok(())
    }

    /// Runs `f` on tokio's blocking threads (see [`off_the_executor`]).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> wasmtime::Result<T> {
        off_the_executor(
            self.plugin.states.crypto.clone(),
            self.host_threads.clone(),
            self.deadline,
            f,
        )
        .await
    }
}

/// The most random bytes one call returns.
pub const MAX_RANDOM_BYTES: u32 = 65_536;
/// PBKDF2-HMAC-SHA256 iterations for new hashes (OWASP's 2023 figure).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Iteration counts accepted when verifying, so a stored hash cannot make
/// verification run for minutes.
const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;

/// See `password-hash` in wit/caps.wit.
pub fn password_hash(password: &str) -> wasmtime::Result<String> {
    let salt = random(16)?;
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero constant");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "$pbkdf2-sha256$i={PBKDF2_ITERATIONS}${}${}",
        B64.encode(&salt),
        B64.encode(out)
    ))
}

/// See `password-verify` in wit/caps.wit.
pub fn password_verify(password: &str, hash: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some(""), Some("pbkdf2-sha256"), Some(i), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(iterations) = i
        .strip_prefix("i=")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n <= PBKDF2_MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (B64.decode(salt), B64.decode(expected)) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // ring's `verify_slices_are_equal` is deprecated; comparing HMACs of both
    // sides under a fresh key is constant-time for any lengths.
    let Ok(key_bytes) = random(32) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let tag = hmac::sign(&key, a);
    hmac::verify(&key, b, tag.as_ref()).is_ok()
}

impl Host for View<'_> {
    async fn random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        self.granted()?;
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("crypto.random-bytes: {len} is over the limit of {MAX_RANDOM_BYTES}");
        }
        Ok(random(len as usize)?)
    }

    async fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.granted()?;
        Ok(digest::digest(&digest::SHA256, &data).as_ref().to_vec())
    }

    async fn hmac(
        &mut self,
        algorithm: HmacAlgorithm,
        key: Vec<u8>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        self.granted()?;
        let alg = match algorithm {
            HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
        };
        Ok(hmac::sign(&hmac::Key::new(alg, &key), &data)
            .as_ref()
            .to_vec())
    }

    async fn password_hash(&mut self, password: String) -> wasmtime::Result<String> {
        self.granted()?;
        self.blocking(move || password_hash(&password)).await?
    }

    async fn password_verify(&mut self, password: String, hash: String) -> wasmtime::Result<bool> {
        self.granted()?;
        self.blocking(move || password_verify(&password, &hash))
            .await
    }

    async fn ed25519_verify(
        &mut self,
        public_key: Vec<u8>,
        message: Vec<u8>,
        sig: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        self.granted()?;
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, &public_key);
        Ok(key.verify(&message, &sig).is_ok())
    }

    async fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> wasmtime::Result<bool> {
        self.granted()?;
        Ok(constant_time_eq(&a, &b))
    }
}

/// Runs `f` on tokio's blocking threads, holding a thread of the host's
/// pool (`runtime.blocking_threads`) and of this plugin's share of it,
/// so that a burst of password checks neither stalls the executor that
/// serves every other request nor takes every thread from other plugins.
/// Waiting for a thread is bounded by the call's deadline.
async fn off_the_executor<T: Send + 'static>(
    own: Arc<Semaphore>,
    host: Arc<Semaphore>,
    deadline: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> wasmtime::Result<T> {
    let permits = async {
        let own = own.acquire_owned().await?;
        let host = host.acquire_owned().await?;
        Ok::<_, tokio::sync::AcquireError>((own, host))
    };
    let permits = crate::util::deadline::until(deadline, permits)
        .await?
        .map_err(|_| wasmtime::format_err!("the host is shutting down"))?;
    let out = tokio::task::spawn_blocking(f).await;
    drop(permits);
    out.map_err(|e| wasmtime::format_err!("a blocking host call failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_the_grant_a_call_traps() {
        use crate::caps::Grants;
        use crate::caps::testing::Fixture;
        let mut f = Fixture::new("p", Grants::default());
        assert!(
            Host::sha256(&mut View::new(f.call()), b"x".to_vec())
                .await
                .is_err()
        );
        let mut f = Fixture::new(
            "p",
            Grants {
                crypto: true,
                ..Grants::default()
            },
        );
        assert_eq!(
            Host::sha256(&mut View::new(f.call()), b"abc".to_vec())
                .await
                .unwrap()
                .len(),
            32
        );
        let h = Host::password_hash(&mut View::new(f.call()), "pw".into())
            .await
            .unwrap();
        assert!(
            Host::password_verify(&mut View::new(f.call()), "pw".into(), h)
                .await
                .unwrap()
        );
    }

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let h = password_hash("correct horse").unwrap();
        assert!(h.starts_with("$pbkdf2-sha256$i=600000$"));
        assert!(password_verify("correct horse", &h));
        assert!(!password_verify("correct horsE", &h));
        assert!(!password_verify("correct horse", "garbage"));
        assert!(!password_verify(
            "correct horse",
            &h.replace("i=600000", "i=4000000000")
        ));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
