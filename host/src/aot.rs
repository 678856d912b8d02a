//! Precompiled plugins ("artefacts"): `wasmgate compile` turns a plugin's
//! component into machine code (or Pulley bytecode) for a target ahead of
//! time, signs it, and writes one file that a host loads without compiling.
//! It is how a host built without the compiler (a router build) runs
//! plugins at all, and how any host starts without compiling.
//!
//! Deserializing compiled code is trusting it with the process: only bytes
//! that `wasmgate compile` wrote are ever deserialized. Each artefact is
//! signed with an Ed25519 key (made by `wasmgate package keygen`) whose
//! public key the loading host lists under `trust.compilers`; the signature
//! covers the header, which carries the SHA-256 of the code. A file that is
//! not signed by a listed key, or whose code does not match, is refused
//! before wasmtime sees a byte of it.
//!
//! A file, in order: [`MAGIC`], the header's length (u32, big-endian), the
//! header (JSON, [`Header`]), the signature (64 bytes, over
//! [`SIGNING_CONTEXT`] then the header's bytes), the code (what
//! `Engine::precompile_component` made).
//!
//! The code is tied to the wasmtime version, the architecture, and the
//! engine settings that shape code (the allocator's memory layout, the
//! largest memory): each is in the header, checked first with a message
//! naming both sides, and wasmtime checks them again when deserializing.
//!
//! This module also holds the engine configuration itself
//! ([`engine_config`]), since compiled code depends on it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{AllocatorKind, RuntimeConfig, TrustedKey};

/// The first bytes of an artefact (never the start of a wasm file).
pub const MAGIC: &[u8; 8] = b"WGAOT01\n";
/// What an artefact signature signs first: keeps it from being valid as a
/// package signature or anything else the same key signs.
pub const SIGNING_CONTEXT: &[u8] = b"wasmgate-artefact-v1\n";
/// The file name extension `wasmgate compile` gives artefacts.
pub const EXTENSION: &str = "aot";
/// The wasmtime this host links (pinned exactly in host/Cargo.toml; a test
/// checks the two agree).
pub const WASMTIME_VERSION: &str = "48.0.8";
/// The largest header read.
const MAX_HEADER: usize = 64 << 10;

/// The largest stack a wasm call may use, and the fibre stack it runs on.
pub const MAX_WASM_STACK: usize = 512 << 10;
pub const ASYNC_STACK: usize = 2 << 20;

/// What an artefact says of itself; signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The plugin's name in the config it was compiled from.
    pub plugin: String,
    /// The component it was compiled from (hex).
    pub component_sha256: String,
    /// The code that follows the signature (hex).
    pub code_sha256: String,
    /// What the code runs on: an architecture (`x86_64`, `aarch64`, …) or
    /// `pulley32`/`pulley64` (and their `be` forms), see [`code_target`].
    pub arch: String,
    /// The target asked for (a triple or a Pulley name).
    pub target: String,
    pub wasmtime: String,
    pub wasmgate: String,
    /// The engine settings the code was compiled under.
    pub engine: EngineSettings,
}

/// The settings of a host's engine that change compiled code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub allocator: AllocatorKind,
    /// The largest memory any plugin may have (the on-demand allocator
    /// reserves exactly this much per memory).
    pub max_memory_bytes: u64,
}

impl std::fmt::Display for EngineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alloc = match self.allocator {
            AllocatorKind::Pooling => "pooling",
            AllocatorKind::OnDemand => "on_demand",
        };
        write!(
            f,
            "allocator {alloc}, largest memory {} MiB",
            self.max_memory_bytes >> 20
        )
    }
}

/// Why an artefact was refused. Each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AotError {
    #[error("not a wasmgate artefact, or a damaged one: {0}")]
    Malformed(String),
    #[error(
        "no key is trusted to sign precompiled plugins: list the public key of the key `wasmgate compile --key` used under `trust.compilers` in config.yaml"
    )]
    NoTrustedCompiler,
    #[error(
        "not signed by a key listed under `trust.compilers` (signed for plugin `{plugin}`, compiled by wasmgate {wasmgate}): only artefacts from `wasmgate compile` with a trusted key are loaded"
    )]
    Untrusted { plugin: String, wasmgate: String },
    #[error("the signing key `{key}` is pinned to other plugins than `{plugin}`")]
    Pinned { key: String, plugin: String },
    #[error("the code does not match its signed header (damaged or tampered with)")]
    Tampered,
    #[error(
        "compiled by wasmtime {artefact} (wasmgate {wasmgate}), but this host runs wasmtime {host} (wasmgate {host_wasmgate}): compile it again with this host's `wasmgate compile`"
    )]
    Version {
        artefact: String,
        wasmgate: String,
        host: String,
        host_wasmgate: String,
    },
    #[error(
        "compiled for {artefact} (target {target}), but this host runs {host} code: compile it with `wasmgate compile --target {host_target}`"
    )]
    Arch {
        artefact: String,
        target: String,
        host: String,
        host_target: String,
    },
    #[error(
        "compiled for an engine with {artefact}, but this host's engine has {host}: compile it again with this host's config.yaml (its `runtime` section and the plugins' `memory_mb`)"
    )]
    Engine { artefact: String, host: String },
}

/// An artefact whose signature, code hash, version and target were checked.
pub struct Verified<'a> {
    pub header: Header,
    /// The name of the trusted key that signed it.
    pub signer: String,
    pub code: &'a [u8],
}

/// Whether `bytes` start like an artefact (not whether it is a valid one).
pub fn is_artefact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The parts of an artefact file, unchecked.
struct Parts<'a> {
    header_bytes: &'a [u8],
    signature: &'a [u8],
    code: &'a [u8],
}

fn split(bytes: &[u8]) -> Result<Parts<'_>, AotError> {
    let malformed = |m: &str| AotError::Malformed(m.to_string());
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| malformed("it does not start with the artefact magic bytes"))?;
    if rest.len() < 4 {
        return Err(malformed("it ends inside the header length"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER {
        return Err(malformed("its header is larger than 64 KiB"));
    }
    if rest.len() < len + 64 {
        return Err(malformed("it ends inside the header or the signature"));
    }
    let (header_bytes, rest) = rest.split_at(len);
    let (signature, code) = rest.split_at(64);
    Ok(Parts {
        header_bytes,
        signature,
        code,
    })
}

/// The header of `bytes`, without checking anything else.
pub fn read_header(bytes: &[u8]) -> Result<Header, AotError> {
    header_of(&split(bytes)?)
}

fn header_of(parts: &Parts<'_>) -> Result<Header, AotError> {
    serde_json::from_slice(parts.header_bytes)
        .map_err(|e| AotError::Malformed(format!("its header is not valid: {e}")))
}

/// Checks the artefact `bytes` for plugin `plugin` on this host: signed by
/// one of `compilers` (and, if that key is pinned, for this plugin), code
/// intact, this wasmtime, this host's code target and engine `settings`.
pub fn verify<'a>(
    bytes: &'a [u8],
    plugin: &str,
    compilers: &[TrustedKey],
    host_arch: &str,
    settings: &EngineSettings,
) -> Result<Verified<'a>, AotError> {
    let parts = split(bytes)?;
    let header = header_of(&parts)?;
    if compilers.is_empty() {
        return Err(AotError::NoTrustedCompiler);
    }
    let message = [SIGNING_CONTEXT, parts.header_bytes].concat();
    let signer = compilers
        .iter()
        .find(|k| k.key.verifies(&message, parts.signature))
        .ok_or_else(|| AotError::Untrusted {
            plugin: header.plugin.clone(),
            wasmgate: header.wasmgate.clone(),
        })?;
    if !signer.plugins.is_empty() && !signer.plugins.iter().any(|p| p == plugin) {
        return Err(AotError::Pinned {
            key: signer.name.clone(),
            plugin: plugin.to_string(),
        });
    }
    if crate::util::ids::sha256_hex(parts.code) != header.code_sha256 {
        return Err(AotError::Tampered);
    }
    if header.wasmtime != WASMTIME_VERSION {
        return Err(AotError::Version {
            artefact: header.wasmtime,
            wasmgate: header.wasmgate,
            host: WASMTIME_VERSION.to_string(),
            host_wasmgate: env!("CARGO_PKG_VERSION").to_string(),
        });
    }
    if header.arch != host_arch {
        return Err(AotError::Arch {
            artefact: header.arch,
            target: header.target,
            host: host_arch.to_string(),
            host_target: host_target_hint(host_arch),
        });
    }
    if header.engine != *settings {
        return Err(AotError::Engine {
            artefact: header.engine.to_string(),
            host: settings.to_string(),
        });
    }
    Ok(Verified {
        header,
        signer: signer.name.clone(),
        code: parts.code,
    })
}

/// What `--target` to name for a host whose code target is `arch`.
pub fn host_target_hint(arch: &str) -> String {
    if arch.starts_with("pulley") {
        arch.to_string()
    } else {
        format!("{arch}-unknown-linux-musl")
    }
}

/// Whether this build's architecture has a Cranelift backend (native code);
/// elsewhere wasmtime runs Pulley bytecode.
pub const NATIVE_BACKEND: bool = cfg!(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "s390x"
));

/// The Pulley flavour for an architecture of this pointer width and byte order.
fn pulley_name(bits: u32, big_endian: bool) -> String {
    format!("pulley{bits}{}", if big_endian { "be" } else { "" })
}

/// The code this host runs: its architecture, or Pulley where it has no
/// native backend or `runtime.pulley` asks for it.
pub fn host_code_target(pulley: bool) -> String {
    if pulley || !NATIVE_BACKEND {
        pulley_name(usize::BITS, cfg!(target_endian = "big"))
    } else {
        std::env::consts::ARCH.to_string()
    }
}

/// The code target for a `--target`: `(arch as in the header, what to give
/// wasmtime's Config::target)`. A triple whose architecture has a Cranelift
/// backend gives native code; other architectures (32-bit ARM, MIPS, x86)
/// get Pulley bytecode of their pointer width and byte order, which is what
/// a host built for them runs.
pub fn code_target(target: &str) -> Result<(String, String), String> {
    if target.starts_with("pulley") {
        return match target {
            "pulley32" | "pulley64" | "pulley32be" | "pulley64be" => {
                Ok((target.to_string(), target.to_string()))
            }
            _ => Err(format!(
                "unknown Pulley target `{target}`: pulley32, pulley64, pulley32be or pulley64be"
            )),
        };
    }
    let arch = target.split('-').next().unwrap_or_default();
    let native = match arch {
        "x86_64" | "aarch64" | "s390x" => Some(arch),
        a if a.starts_with("riscv64") => Some("riscv64"),
        _ => None,
    };
    if let Some(native) = native {
        return Ok((native.to_string(), target.to_string()));
    }
    let (bits, big) = match arch {
        a if a.starts_with("armeb") || a.starts_with("thumbeb") => (32, true),
        a if a.starts_with("arm") || a.starts_with("thumb") => (32, false),
        "i386" | "i586" | "i686" | "mipsel" | "riscv32" | "riscv32gc" | "riscv32imac" => {
            (32, false)
        }
        "mips" | "powerpc" => (32, true),
        "mips64el" | "loongarch64" => (64, false),
        "mips64" | "powerpc64" => (64, true),
        "powerpc64le" => (64, false),
        _ => {
            return Err(format!(
                "unknown target `{target}`: name a target triple (aarch64-unknown-linux-musl, armv7-unknown-linux-gnueabihf, …) or pulley32/pulley64"
            ));
        }
    };
    let name = pulley_name(bits, big);
    Ok((name.clone(), name))
}

/// The wasmtime configuration of an engine under `rt`, `max_memory` being
/// the largest memory cap of any plugin; `pooling` picks the allocator (the
/// host falls back to on-demand when the pool cannot be reserved).
/// `target`: compile for another target (see [`code_target`]); `None` for
/// this host (with `rt.pulley` honoured). `compile_only`: an engine that
/// only compiles, for a host with these settings, and so reserves no pool
/// (the pool's settings do not change code; its memory layout, set here
/// either way, does).
pub fn engine_config(
    rt: &RuntimeConfig,
    max_memory: usize,
    pooling: bool,
    target: Option<&str>,
    compile_only: bool,
) -> anyhow::Result<wasmtime::Config> {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.async_stack_size(ASYNC_STACK);
    c.wasm_component_model(true);
    match target {
        Some(t) => {
            c.target(t)?;
        }
        None if rt.pulley && NATIVE_BACKEND => {
            c.target(&host_code_target(true))?;
        }
        None => {}
    }
    if pooling && !compile_only {
        let n = rt.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(16))
            .total_stacks(n)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(max_memory)
            // Keep the first MiB of each memory and table resident and
            // reset it by copying/pagemap scan instead of madvise: the
            // largest single saving per fresh instance.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    } else if !pooling {
        // On demand, each memory reserves only its own cap plus a small
        // guard (explicit bounds checks instead of 4 GiB of guard pages),
        // so the host also fits address spaces of 39 bits, 32-bit targets
        // and under-sized ulimits.
        c.memory_reservation(max_memory as u64)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
    }
    Ok(c)
}

/// The engine settings of `rt` with the allocator actually in use.
pub fn settings(max_memory: usize, pooling: bool) -> EngineSettings {
    EngineSettings {
        allocator: if pooling {
            AllocatorKind::Pooling
        } else {
            AllocatorKind::OnDemand
        },
        max_memory_bytes: max_memory as u64,
    }
}

/// Writes an artefact: `header` (its `code_sha256` is set here) and
/// `code`, signed with `key`.
pub fn seal(mut header: Header, code: &[u8], key: &crate::package::keys::SigningKey) -> Vec<u8> {
    header.code_sha256 = crate::util::ids::sha256_hex(code);
    let header_bytes = serde_json::to_vec(&header).expect("a header serializes");
    let signature = key.sign(&[SIGNING_CONTEXT, &header_bytes].concat());
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header_bytes.len() + 64 + code.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&signature);
    out.extend_from_slice(code);
    out
}

/// The artefact file name for plugin `name`.
pub fn file_name(name: &str) -> String {
    format!("{name}.{EXTENSION}")
}

/// Reads at most `limit` bytes of `path`.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(feature = "compiler")]
pub mod bundle;
#[cfg(feature = "compiler")]
pub mod compile;

#[cfg(test)]
mod tests;
