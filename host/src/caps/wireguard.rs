//! `wireguard`: WireGuard devices and their peers, limited to the devices
//! whose names match the plugin's grant patterns, in the grant's network
//! namespace.
//!
//! Steps of every call, in order:
//! 1. Re-check the grant: withheld, or a device name outside the patterns,
//!    is a typed `denied`, whether or not the device exists.
//! 2. Check every argument (keys, endpoint, allowed IPs) and turn it into
//!    typed values; nothing a plugin sends reaches a socket or a process as
//!    text of its own.
//! 3. Find the device's link in the namespace through `net`'s netlink
//!    connection, then talk to the device's userspace implementation over
//!    its UAPI socket (`/var/run/wireguard/<name>.sock`, the cross-platform
//!    `get=1` / `set=1` protocol), bounded by [`WG_TIMEOUT`] and by the
//!    request's deadline.
//!
//! Backends. The userspace one is the host's own child: `create-device`
//! starts `<userspace_binary> -f <name>` with that fixed argument list, an
//! empty environment and no shell, inside the grant's namespace (`setns` in
//! the child before `exec`), and waits for its UAPI socket. [`Devices`]
//! tracks the children; `delete-device` stops one and removes its socket,
//! and the host stops them all when it shuts down. The children are started
//! from one long-lived thread with `PR_SET_PDEATHSIG`, so that they also end
//! when the host dies without shutting down. The kernel's WireGuard over
//! generic netlink ([`super::wireguard_kernel`]) serves `backend: kernel`,
//! and `auto` where the kernel has WireGuard (its generic netlink family
//! `wireguard` resolves in the grant's namespace; probed at the first
//! `create-device` there and remembered while the host runs), else
//! userspace. A device is read and configured the
//! way its link says (a kernel `wireguard` link, or a TUN link with a UAPI
//! socket), whichever backend made it. `backend: kernel` on a kernel
//! without WireGuard answers an `os` error that says so. No `wg` or
//! `wg-quick` process is ever run.
//!
//! UAPI sockets of every namespace share one directory, so a device name is
//! unique on the machine, not only in its namespace.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkWireguard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use super::net::{errno, find_link, glob_match, link_name, set_up_by_index, valid_link_name};
use super::wireguard_kernel::{Change, Kernel, KernelDevice, PeerChange};
use crate::bindings::wireguard::{Device, Error, Host, Keypair, Peer, PeerConfig};
use crate::config::{WireguardBackend, WireguardGrant};
use crate::runtime::{Ctx, PluginShared};

pub const CAP: Capability = Capability {
    name: "wireguard",
    granted: |g| g.wireguard.is_some(),
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::wireguard::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

/// The longest one call may take when the request's deadline is further:
/// starting `wireguard-go` takes a few hundred milliseconds, the rest
/// microseconds.
pub const WG_TIMEOUT: Duration = Duration::from_secs(10);
/// Where userspace implementations put their UAPI sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// How long a new `wireguard-go` may take to open its UAPI socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped `wireguard-go` may take to end after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The most allowed IPs one peer may have.
const MAX_ALLOWED_IPS: usize = 1024;
/// The largest UAPI answer read (a `get` of a few thousand peers).
const MAX_UAPI_REPLY: usize = 16 << 20;
/// How many lines of a child's output are kept for an error message.
const OUTPUT_TAIL: usize = 8;
/// How much of a refused name an error message repeats.
const MAX_NAME_IN_MESSAGE: usize = 64;

/// The UAPI socket of device `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

// ---------------------------------------------------------------------------
// Keys

/// A fresh X25519 private key, clamped as `wg genkey` prints it.
fn new_private_key() -> wasmtime::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    key.copy_from_slice(&crate::util::ids::random(32)?);
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    Ok(key)
}

fn public_of(private: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

fn encode_key(key: &[u8; 32]) -> String {
    BASE64.encode(key)
}

/// A base64 key of 32 bytes; `what` names it in the error.
fn decode_key(what: &str, text: &str) -> Result<[u8; 32], Error> {
    BASE64
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| Error::Invalid(format!("{what} is not the base64 of 32 bytes")))
}

fn hex_key(key: &[u8; 32]) -> String {
    crate::util::ids::hex(key)
}

fn unhex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Arguments

/// A name as repeated in an error message: bounded.
fn shown(name: &str) -> String {
    crate::util::text::shown(name, MAX_NAME_IN_MESSAGE)
}

fn no_device(name: &str) -> Error {
    Error::NotFound(format!("no WireGuard device `{}`", shown(name)))
}

/// `ip:port` or `[ip6]:port`, no host names (the host never resolves them).
fn parse_endpoint(text: &str) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::Invalid(format!(
            "endpoint `{}` is not ip:port or [ip6]:port",
            shown(text)
        ))
    })?;
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(Error::Invalid(format!(
            "endpoint `{addr}` cannot be reached"
        )));
    }
    Ok(addr)
}

/// A CIDR such as `10.0.0.2/32`; a bare address means its host route.
fn parse_allowed_ip(text: &str) -> Result<(IpAddr, u8), Error> {
    let bad = || {
        Error::Invalid(format!(
            "allowed IP `{}` is not a CIDR like 10.0.0.2/32",
            shown(text)
        ))
    };
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && l.len() <= 3 => {
            l.parse::<u8>().map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    if len > max {
        return Err(Error::Invalid(format!(
            "allowed IP `{}`: prefix length {len} is over {max}",
            shown(text)
        )));
    }
    Ok((ip, len))
}

/// A peer's settings, checked and typed.
struct CheckedPeer {
    public_key: [u8; 32],
    preshared_key: Option<[u8; 32]>,
    endpoint: Option<SocketAddr>,
    /// 0 is off.
    keepalive: u16,
    allowed_ips: Vec<(IpAddr, u8)>,
}

fn check_peer(peer: &PeerConfig) -> Result<CheckedPeer, Error> {
    if peer.allowed_ips.len() > MAX_ALLOWED_IPS {
        return Err(Error::Invalid(format!(
            "more than {MAX_ALLOWED_IPS} allowed IPs"
        )));
    }
    Ok(CheckedPeer {
        public_key: decode_key("public-key", &peer.public_key)?,
        preshared_key: peer
            .preshared_key
            .as_deref()
            .map(|k| decode_key("preshared-key", k))
            .transpose()?,
        endpoint: peer.endpoint.as_deref().map(parse_endpoint).transpose()?,
        keepalive: peer.persistent_keepalive.unwrap_or(0),
        allowed_ips: peer
            .allowed_ips
            .iter()
            .map(|a| parse_allowed_ip(a))
            .collect::<Result<_, _>>()?,
    })
}

/// The UAPI `set=1` lines of one peer, from checked values only.
#[cfg(test)]
fn peer_lines(peer: &PeerConfig) -> Result<String, Error> {
    check_peer(peer).map(|p| uapi_lines(&p))
}

/// The UAPI `set=1` lines of a checked peer.
fn uapi_lines(p: &CheckedPeer) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "public_key={}", hex_key(&p.public_key));
    // All zeroes is how UAPI says "no preshared key".
    let _ = writeln!(
        out,
        "preshared_key={}",
        hex_key(&p.preshared_key.unwrap_or([0u8; 32]))
    );
    if let Some(endpoint) = p.endpoint {
        let _ = writeln!(out, "endpoint={endpoint}");
    }
    let _ = writeln!(out, "persistent_keepalive_interval={}", p.keepalive);
    out.push_str("replace_allowed_ips=true\n");
    for (ip, len) in &p.allowed_ips {
        let _ = writeln!(out, "allowed_ip={ip}/{len}");
    }
    out
}

/// A checked peer as a kernel change.
fn peer_change(p: CheckedPeer) -> PeerChange {
    PeerChange {
        public_key: p.public_key,
        remove: false,
        preshared_key: Some(p.preshared_key),
        endpoint: p.endpoint,
        persistent_keepalive: Some(p.keepalive),
        allowed_ips: Some(p.allowed_ips),
    }
}

/// A kernel device as the capability shows it.
fn device_from_kernel(name: &str, up: bool, d: KernelDevice) -> Device {
    Device {
        name: name.to_string(),
        public_key: d.public_key.map(|k| encode_key(&k)),
        listen_port: d.listen_port,
        up,
        peers: d
            .peers
            .into_iter()
            .map(|p| Peer {
                public_key: encode_key(&p.public_key),
                has_preshared_key: p.has_preshared_key,
                endpoint: p.endpoint.map(|e| e.to_string()),
                allowed_ips: p
                    .allowed_ips
                    .iter()
                    .map(|(ip, len)| format!("{ip}/{len}"))
                    .collect(),
                latest_handshake: p.latest_handshake,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// UAPI

/// One UAPI operation on device `name`: `request` (ending in an empty line)
/// out, the answer up to its terminating empty line back, `errno` checked.
async fn uapi(name: &str, request: &str) -> Result<String, Error> {
    let path = socket_path(name);
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| Error::Os(format!("UAPI socket {}: {e}", path.display())))?;
    let io_err = |e: io::Error| Error::Os(format!("UAPI socket {}: {e}", path.display()));
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    while !reply.ends_with(b"\n\n") {
        let n = stream.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.len() > MAX_UAPI_REPLY {
            return Err(Error::Os(format!(
                "the UAPI answer of `{name}` is over {MAX_UAPI_REPLY} bytes"
            )));
        }
    }
    let text = String::from_utf8(reply)
        .map_err(|_| Error::Os(format!("the UAPI answer of `{name}` is not UTF-8")))?;
    let errno = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|n| n.trim().parse::<i32>().ok())
        .ok_or_else(|| Error::Os(format!("the UAPI answer of `{name}` has no errno")))?;
    if errno != 0 {
        return Err(Error::Os(format!(
            "the userspace implementation refused: {}",
            io::Error::from_raw_os_error(errno)
        )));
    }
    Ok(text)
}

async fn uapi_set(name: &str, body: &str) -> Result<(), Error> {
    uapi(name, &format!("set=1\n{body}\n")).await.map(drop)
}

/// What `get=1` says about a device.
#[derive(Debug, Default)]
struct Reading {
    public_key: Option<String>,
    listen_port: Option<u16>,
    peers: Vec<Peer>,
}

fn parse_get(text: &str) -> Reading {
    let mut r = Reading::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key == "public_key" {
            r.peers.push(Peer {
                public_key: unhex_key(value).map(|k| encode_key(&k)).unwrap_or_default(),
                has_preshared_key: false,
                endpoint: None,
                allowed_ips: Vec::new(),
                latest_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: None,
            });
            continue;
        }
        match (r.peers.last_mut(), key) {
            (None, "private_key") => {
                r.public_key = unhex_key(value)
                    .filter(|k| *k != [0u8; 32])
                    .map(|k| encode_key(&public_of(&k)));
            }
            (None, "listen_port") => r.listen_port = value.parse().ok().filter(|p| *p != 0),
            (Some(p), "preshared_key") => {
                p.has_preshared_key = unhex_key(value).is_some_and(|k| k != [0u8; 32])
            }
            (Some(p), "endpoint") => p.endpoint = Some(value.to_string()),
            (Some(p), "allowed_ip") => p.allowed_ips.push(value.to_string()),
            (Some(p), "last_handshake_time_sec") => {
                p.latest_handshake = value.parse().ok().filter(|s| *s != 0);
            }
            (Some(p), "rx_bytes") => p.rx_bytes = value.parse().unwrap_or(0),
            (Some(p), "tx_bytes") => p.tx_bytes = value.parse().unwrap_or(0),
            (Some(p), "persistent_keepalive_interval") => {
                p.persistent_keepalive = value.parse().ok().filter(|s| *s != 0);
            }
            _ => {}
        }
    }
    r
}

// ---------------------------------------------------------------------------
// Userspace children

/// The userspace implementations this host started, by device name.
#[derive(Default)]
pub struct Devices {
    slots: Mutex<HashMap<String, Slot>>,
    /// The kernel's `wireguard` generic netlink family id by namespace
    /// (`None`: the host's), `None` where it has no WireGuard, as first
    /// probed: `auto` keeps one backend for the host's lifetime, and kernel
    /// calls reuse the id instead of resolving it again.
    kernel: Mutex<HashMap<Option<PathBuf>, Option<u16>>>,
}

enum Slot {
    /// A `create-device` is starting it.
    Starting,
    Running(Userspace),
}

/// One running `wireguard-go`.
struct Userspace {
    child: Child,
    /// The namespace it was started in (`None`: the host's).
    netns: Option<PathBuf>,
    /// The last lines it printed.
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Devices {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `name` for a start; false if it is taken.
    fn reserve(&self, name: &str) -> bool {
        let mut slots = self.lock();
        if slots.contains_key(name) {
            return false;
        }
        slots.insert(name.to_string(), Slot::Starting);
        true
    }

    fn kernel_probes(&self) -> std::sync::MutexGuard<'_, HashMap<Option<PathBuf>, Option<u16>>> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the probe of `netns` found (the family id, or none), if it has run.
    fn kernel_known(&self, netns: Option<&Path>) -> Option<Option<u16>> {
        self.kernel_probes()
            .get(&netns.map(Path::to_path_buf))
            .copied()
    }

    fn remember_kernel(&self, netns: Option<&Path>, family: Option<u16>) {
        self.kernel_probes()
            .insert(netns.map(Path::to_path_buf), family);
    }

    /// Takes the running child of `name` if it runs in `netns`.
    fn take(&self, name: &str, netns: Option<&Path>) -> Option<Userspace> {
        let mut slots = self.lock();
        match slots.get(name) {
            Some(Slot::Running(u)) if u.netns.as_deref() == netns => match slots.remove(name) {
                Some(Slot::Running(u)) => Some(u),
                _ => None,
            },
            _ => None,
        }
    }

    /// Forgets children that have ended by themselves (their link was
    /// deleted from outside, or they crashed).
    fn reap(&self) {
        self.lock().retain(|name, slot| match slot {
            Slot::Running(u) => match u.child.try_wait() {
                Ok(None) => true,
                _ => {
                    tracing::warn!(device = %name, "wireguard-go ended by itself");
                    let _ = std::fs::remove_file(socket_path(name));
                    false
                }
            },
            Slot::Starting => true,
        });
    }

    /// Stops every child and removes its socket: on shutdown.
    pub fn stop_all(&self) {
        let running: Vec<(String, Userspace)> = self
            .lock()
            .drain()
            .filter_map(|(n, s)| match s {
                Slot::Running(u) => Some((n, u)),
                Slot::Starting => None,
            })
            .collect();
        for (_, u) in &running {
            terminate(&u.child);
        }
        for (name, mut u) in running {
            stop(&name, &mut u.child);
            tracing::info!(device = %name, "stopped wireguard-go");
        }
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: a signal to our own child, which has not been reaped yet
        // (so the pid cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Stops a child (SIGTERM, then SIGKILL after [`STOP_GRACE`]), reaps it and
/// removes its socket. Blocks for up to [`STOP_GRACE`].
fn stop(name: &str, child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        terminate(child);
        let started = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && started.elapsed() < STOP_GRACE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(socket_path(name));
}

/// What the spawning thread is asked to start.
struct SpawnRequest {
    program: PathBuf,
    name: String,
    netns: Option<std::fs::File>,
    reply: tokio::sync::oneshot::Sender<io::Result<(Child, io::PipeReader)>>,
}

/// The one thread that starts children. `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked a child ends, so children are forked from a thread
/// that lives as long as the process, never from a tokio worker.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

fn send_spawn(request: SpawnRequest) -> io::Result<()> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    if spawner.is_none() {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("wasmgate-wireguard".into())
            .spawn(move || {
                for r in rx {
                    let result = spawn_child(&r.program, &r.name, r.netns.as_ref());
                    let _ = r.reply.send(result);
                }
            })?;
        *spawner = Some(tx);
    }
    match spawner.as_ref() {
        Some(tx) => tx
            .send(request)
            .map_err(|_| io::Error::other("the spawning thread has ended")),
        None => Err(io::Error::other("no spawning thread")),
    }
}

/// `program -f name`, with an empty environment, its output on a pipe,
/// inside `netns`, ending with its parent.
fn spawn_child(
    program: &Path,
    name: &str,
    netns: Option<&std::fs::File>,
) -> io::Result<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = Command::new(program);
    cmd.arg("-f")
        .arg(name)
        .env_clear()
        .env("LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let ns_fd = netns.map(|f| f.as_raw_fd());
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe system calls and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the line above: nothing would stop us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = ns_fd {
                crate::util::netns::enter(fd)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The command holds the pipe's write ends; dropping it lets the reader
    // see the end of the output when the child ends.
    drop(cmd);
    Ok((child, reader))
}

/// `binary` as configured: an absolute path, or a name in the host's `PATH`.
fn resolve_binary(binary: &str) -> Result<PathBuf, Error> {
    if binary.starts_with('/') {
        return Ok(PathBuf::from(binary));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Error::Os(format!(
                "the userspace implementation `{binary}` is not in PATH (install wireguard-go, or set `userspace_binary`)"
            ))
        })
}

/// Copies a child's output into the host log, keeping its last lines.
fn follow_output(name: String, reader: io::PipeReader, tail: Arc<Mutex<VecDeque<String>>>) {
    let spawned = std::thread::Builder::new()
        .name("wasmgate-wg-log".into())
        .spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let line = line.trim();
                // wireguard-go's banner about the kernel module is box art.
                if line.is_empty() || line.starts_with(['│', '┌', '└']) {
                    continue;
                }
                tracing::debug!(device = %name, "wireguard-go: {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == OUTPUT_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(300).collect());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot follow wireguard-go's output");
    }
}

/// A start in progress: on drop (failure, or the request's deadline) the
/// child is stopped and the name released.
struct Starting<'a> {
    devices: &'a Devices,
    name: String,
    running: Option<Userspace>,
}

impl Starting<'_> {
    fn commit(mut self) {
        if let Some(u) = self.running.take() {
            self.devices
                .lock()
                .insert(self.name.clone(), Slot::Running(u));
        }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut slots = self.devices.lock();
        if let Some(mut u) = self.running.take() {
            let _ = u.child.kill();
            let _ = u.child.wait();
            let _ = std::fs::remove_file(socket_path(&self.name));
        }
        if matches!(slots.get(&self.name), Some(Slot::Starting)) {
            slots.remove(&self.name);
        }
    }
}

// ---------------------------------------------------------------------------
// One call

/// One call's view of the capability: the grant, re-checked, and the
/// netlink connection of its namespace.
struct Wg<'a> {
    grant: &'a WireguardGrant,
    plugin: &'a PluginShared,
    netns: Option<PathBuf>,
}

/// What kind of WireGuard a link is.
#[derive(Debug, PartialEq)]
enum Kind {
    /// A userspace implementation's TUN link with its UAPI socket.
    Userspace,
    /// The kernel's `wireguard` link.
    Kernel,
}

impl<'a> Wg<'a> {
    fn open(plugin: &'a PluginShared) -> Result<Wg<'a>, Error> {
        let grant = plugin
            .grants
            .wireguard
            .as_ref()
            .ok_or_else(|| Error::Denied("`wireguard` is not granted to this plugin".into()))?;
        Ok(Wg {
            grant,
            plugin,
            netns: grant.netns_path(),
        })
    }

    fn check(&self, name: &str) -> Result<(), Error> {
        if self.grant.devices.iter().any(|p| glob_match(p, name)) {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "device `{}` is outside the grant",
                shown(name)
            )))
        }
    }

    async fn handle(&self) -> Result<Handle, Error> {
        self.plugin
            .host
            .net
            .handle(self.netns.as_deref())
            .await
            .map_err(from_net)
    }

    fn netlink_failed(&self, e: rtnetlink::Error) -> Error {
        if e == rtnetlink::Error::RequestFailed {
            self.plugin.host.net.forget(self.netns.as_deref());
        }
        from_net(super::net::os(e))
    }

    /// The link of `name` in the namespace, if any.
    async fn link(&self, handle: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
        if !valid_link_name(name) {
            return Ok(None);
        }
        find_link(handle, name)
            .await
            .map_err(|e| self.netlink_failed(e))
    }

    /// The device `name`: its link and its kind; `not-found` when the link
    /// is missing or is not WireGuard.
    async fn device(&self, handle: &Handle, name: &str) -> Result<(LinkMessage, Kind), Error> {
        let link = self
            .link(handle, name)
            .await?
            .ok_or_else(|| no_device(name))?;
        let kind = kind_of(&link, name).ok_or_else(|| no_device(name))?;
        Ok((link, kind))
    }

    /// The kind of device `name`, which must exist.
    async fn kind(&self, name: &str) -> Result<Kind, Error> {
        self.check(name)?;
        let handle = self.handle().await?;
        Ok(self.device(&handle, name).await?.1)
    }

    /// Runs `f` on generic netlink with the kernel's WireGuard, in the
    /// grant's namespace, off the async threads.
    async fn kernel<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Kernel) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let family = self.kernel_family().await?.ok_or_else(kernel_absent)?;
        let netns = self.netns.clone();
        tokio::task::spawn_blocking(move || {
            let mut k = Kernel::connect(netns.as_deref(), family)
                .map_err(|e| Error::Os(format!("generic netlink: {e}")))?;
            f(&mut k).map_err(|e| Error::Os(format!("kernel WireGuard: {e}")))
        })
        .await
        .map_err(|e| Error::Os(format!("kernel WireGuard: {e}")))?
    }

    /// The kernel's `wireguard` generic netlink family id in the grant's
    /// namespace, none where it has no WireGuard (ENOENT). Probed once per
    /// namespace and remembered; a failed probe (no such namespace) is not.
    async fn kernel_family(&self) -> Result<Option<u16>, Error> {
        let devices = &self.plugin.host.wireguard;
        if let Some(known) = devices.kernel_known(self.netns.as_deref()) {
            return Ok(known);
        }
        let netns = self.netns.clone();
        let family = tokio::task::spawn_blocking(move || {
            Kernel::open(netns.as_deref()).map(|k| k.map(|k| k.family()))
        })
        .await
        .map_err(|e| Error::Os(format!("generic netlink: {e}")))?
        .map_err(|e| Error::Os(format!("generic netlink: {e}")))?;
        devices.remember_kernel(self.netns.as_deref(), family);
        Ok(family)
    }

    /// Whether the kernel has WireGuard in the grant's namespace.
    async fn kernel_available(&self) -> Result<bool, Error> {
        Ok(self.kernel_family().await?.is_some())
    }

    /// The backend a new device gets: `kernel` only where the kernel has
    /// WireGuard, `auto` the kernel's where it has it, else userspace.
    async fn backend(&self) -> Result<Kind, Error> {
        match self.grant.backend {
            WireguardBackend::Userspace => Ok(Kind::Userspace),
            WireguardBackend::Kernel if self.kernel_available().await? => Ok(Kind::Kernel),
            WireguardBackend::Kernel => Err(kernel_absent()),
            WireguardBackend::Auto if self.kernel_available().await? => Ok(Kind::Kernel),
            WireguardBackend::Auto => Ok(Kind::Userspace),
        }
    }

    async fn list_devices(&self) -> Result<Vec<String>, Error> {
        let handle = self.handle().await?;
        let mut out = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(|e| self.netlink_failed(e))? {
            if let Some(name) = link_name(&link)
                && self.grant.devices.iter().any(|p| glob_match(p, name))
                && kind_of(&link, name).is_some()
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn get_device(&self, name: &str) -> Result<Device, Error> {
        self.check(name)?;
        let handle = self.handle().await?;
        let (link, kind) = self.device(&handle, name).await?;
        let up = link.header.flags.contains(LinkFlags::Up);
        if kind == Kind::Kernel {
            let owned = name.to_string();
            let d = self.kernel(move |k| k.get(&owned)).await?;
            return Ok(device_from_kernel(name, up, d));
        }
        let reading = parse_get(&uapi(name, "get=1\n\n").await?);
        Ok(Device {
            name: name.to_string(),
            public_key: reading.public_key,
            listen_port: reading.listen_port,
            up,
            peers: reading.peers,
        })
    }

    async fn create_device(&self, name: &str) -> Result<(), Error> {
        self.check(name)?;
        if !valid_link_name(name) {
            return Err(Error::Invalid(format!(
                "`{}` cannot be a device name: 1 to 15 characters, no `/`, `:` or spaces",
                shown(name)
            )));
        }
        if self.backend().await? == Kind::Kernel {
            return self.create_kernel_device(name).await;
        }
        let program = resolve_binary(&self.grant.userspace_binary)?;
        let handle = self.handle().await?;
        let devices = &self.plugin.host.wireguard;
        devices.reap();
        let exists = || Error::Exists(format!("device `{}` already exists", shown(name)));
        if !devices.reserve(name) {
            return Err(exists());
        }
        let mut starting = Starting {
            devices,
            name: name.to_string(),
            running: None,
        };
        if self.link(&handle, name).await?.is_some() {
            return Err(exists());
        }
        let socket = socket_path(name);
        if socket.exists() {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                // A device of this name in another namespace.
                return Err(exists());
            }
            // Left behind by an implementation that was killed.
            let _ = std::fs::remove_file(&socket);
        }
        let netns = match &self.netns {
            None => None,
            Some(path) => Some(
                std::fs::File::open(path)
                    .map_err(|e| Error::Os(format!("network namespace {}: {e}", path.display())))?,
            ),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        send_spawn(SpawnRequest {
            program: program.clone(),
            name: name.to_string(),
            netns,
            reply,
        })
        .map_err(|e| Error::Os(format!("cannot start {}: {e}", program.display())))?;
        let (child, output) = answer
            .await
            .map_err(|_| Error::Os("the spawning thread ended without an answer".into()))?
            .map_err(|e| Error::Os(format!("cannot start {}: {e}", program.display())))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        follow_output(name.to_string(), output, tail.clone());
        let running = starting.running.insert(Userspace {
            child,
            netns: self.netns.clone(),
            output: tail,
        });
        tracing::info!(plugin = %self.plugin.name, device = %name, pid = running.child.id(), "started wireguard-go");

        let started = Instant::now();
        loop {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                // Let the output thread read the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let said: Vec<String> = running
                    .output
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                return Err(Error::Os(format!(
                    "{} -f {} ended ({status}) before opening its UAPI socket: {}",
                    program.display(),
                    shown(name),
                    if said.is_empty() {
                        "no output".to_string()
                    } else {
                        said.join(" | ")
                    }
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Os(format!(
                    "{} did not open {} within {} s",
                    program.display(),
                    socket.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        starting.commit();
        Ok(())
    }

    /// A kernel `wireguard` link, down and unconfigured.
    async fn create_kernel_device(&self, name: &str) -> Result<(), Error> {
        let handle = self.handle().await?;
        if self.link(&handle, name).await?.is_some() || socket_path(name).exists() {
            return Err(Error::Exists(format!(
                "device `{}` already exists",
                shown(name)
            )));
        }
        match handle
            .link()
            .add(LinkWireguard::new(name).build())
            .execute()
            .await
        {
            Ok(()) => {
                tracing::info!(plugin = %self.plugin.name, device = %name, "created a kernel WireGuard device");
                Ok(())
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(Error::Exists(format!(
                "device `{}` already exists",
                shown(name)
            ))),
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Err(kernel_absent()),
            Err(e) => Err(self.netlink_failed(e)),
        }
    }

    async fn delete_device(&self, name: &str) -> Result<(), Error> {
        self.check(name)?;
        let handle = self.handle().await?;
        let devices = &self.plugin.host.wireguard;
        if let Some(mut u) = devices.take(name, self.netns.as_deref()) {
            let name = name.to_string();
            tokio::task::spawn_blocking(move || stop(&name, &mut u.child))
                .await
                .map_err(|e| Error::Os(format!("stopping wireguard-go: {e}")))?;
            return Ok(());
        }
        // Not a child of this host: a device started by someone else, or a
        // kernel device. Deleting its link ends either.
        let (link, kind) = self.device(&handle, name).await?;
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Err(no_device(name)),
            Err(e) => return Err(self.netlink_failed(e)),
        }
        if kind == Kind::Userspace {
            // The implementation removes its socket as it ends; give it a moment.
            let socket = socket_path(name);
            for _ in 0..50 {
                if tokio::net::UnixStream::connect(&socket).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if tokio::net::UnixStream::connect(&socket).await.is_err() {
                let _ = std::fs::remove_file(&socket);
            }
        }
        Ok(())
    }

    async fn configure_device(
        &self,
        name: &str,
        private_key: Option<&str>,
        listen_port: Option<u16>,
        replace_peers: bool,
    ) -> Result<(), Error> {
        self.check(name)?;
        let key = private_key
            .map(|k| decode_key("private-key", k))
            .transpose()?;
        if self.kind(name).await? == Kind::Kernel {
            let change = Change {
                private_key: key,
                listen_port,
                replace_peers,
                peers: Vec::new(),
            };
            let owned = name.to_string();
            return self.kernel(move |k| k.set(&owned, &change)).await;
        }
        let mut body = String::new();
        if let Some(key) = key {
            let _ = writeln!(body, "private_key={}", hex_key(&key));
        }
        if let Some(port) = listen_port {
            let _ = writeln!(body, "listen_port={port}");
        }
        if replace_peers {
            body.push_str("replace_peers=true\n");
        }
        uapi_set(name, &body).await
    }

    async fn set_peer(&self, name: &str, peer: &PeerConfig) -> Result<(), Error> {
        self.check(name)?;
        // Arguments first: a bad one is refused whatever the device.
        let checked = check_peer(peer)?;
        if self.kind(name).await? == Kind::Kernel {
            let change = Change {
                peers: vec![peer_change(checked)],
                ..Change::default()
            };
            let owned = name.to_string();
            return self.kernel(move |k| k.set(&owned, &change)).await;
        }
        uapi_set(name, &uapi_lines(&checked)).await
    }

    async fn remove_peer(&self, name: &str, public_key: &str) -> Result<(), Error> {
        self.check(name)?;
        let key = decode_key("public-key", public_key)?;
        let wanted = encode_key(&key);
        let missing = || Error::NotFound(format!("device `{}` has no peer {wanted}", shown(name)));
        if self.kind(name).await? == Kind::Kernel {
            // The kernel, too, removes a peer it does not have without a word.
            let owned = name.to_string();
            return self
                .kernel(move |k| {
                    if !k.get(&owned)?.peers.iter().any(|p| p.public_key == key) {
                        return Ok(false);
                    }
                    let change = Change {
                        peers: vec![PeerChange::removal(key)],
                        ..Change::default()
                    };
                    k.set(&owned, &change).map(|()| true)
                })
                .await?
                .then_some(())
                .ok_or_else(missing);
        }
        // UAPI removes a peer it does not have without a word: look first.
        let reading = parse_get(&uapi(name, "get=1\n\n").await?);
        if !reading.peers.iter().any(|p| p.public_key == wanted) {
            return Err(Error::NotFound(format!(
                "device `{}` has no peer {wanted}",
                shown(name)
            )));
        }
        uapi_set(
            name,
            &format!("public_key={}\nremove=true\n", hex_key(&key)),
        )
        .await
    }

    async fn set_up(&self, name: &str, up: bool) -> Result<(), Error> {
        self.check(name)?;
        let handle = self.handle().await?;
        let (link, _) = self.device(&handle, name).await?;
        match set_up_by_index(&handle, link.header.index, up).await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(no_device(name)),
            Err(e) => Err(self.netlink_failed(e)),
        }
    }
}

/// A netlink failure as `net` words it, as an `os` error here.
fn from_net(e: crate::bindings::net::Error) -> Error {
    use crate::bindings::net::Error as Net;
    match e {
        Net::Denied(m) | Net::NotFound(m) | Net::Invalid(m) | Net::Os(m) => Error::Os(m),
    }
}

fn kernel_absent() -> Error {
    Error::Os(
        "this kernel has no WireGuard module (no generic netlink family `wireguard`: the module is not built, or was not loaded when the host first looked); use `backend: userspace` (or `auto`) with wireguard-go"
            .into(),
    )
}

/// Whether a link is a WireGuard device, and which kind: the kernel's
/// `wireguard` link, or a TUN link with a UAPI socket of its name.
fn kind_of(link: &LinkMessage, name: &str) -> Option<Kind> {
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Wireguard) => Some(Kind::Kernel),
        Some(InfoKind::Tun) if socket_path(name).exists() => Some(Kind::Userspace),
        _ => None,
    }
}

/// Runs one call: opens the view (re-checking the grant) and bounds the
/// whole call by [`WG_TIMEOUT`] and by the request's own deadline, which
/// the epoch callback cannot check while the fibre waits here: running past
/// it traps the call as a deadline, like wasm code running past it.
async fn call<'a, T, F, Fut>(
    plugin: &'a PluginShared,
    deadline: Instant,
    f: F,
) -> wasmtime::Result<Result<T, Error>>
where
    F: FnOnce(Wg<'a>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let wg = match Wg::open(plugin) {
        Ok(wg) => wg,
        Err(e) => return Ok(Err(e)),
    };
    match crate::util::deadline::bound(deadline, WG_TIMEOUT, f(wg)).await? {
        Some(r) => Ok(r),
        None => Ok(Err(Error::Os(format!(
            "WireGuard did not answer within {} s",
            WG_TIMEOUT.as_secs()
        )))),
    }
}

impl Host for Ctx {
    async fn generate_keypair(&mut self) -> wasmtime::Result<Keypair> {
        let private = new_private_key()?;
        Ok(Keypair {
            public_key: encode_key(&public_of(&private)),
            private_key: encode_key(&private),
        })
    }

    async fn generate_preshared_key(&mut self) -> wasmtime::Result<String> {
        let mut key = [0u8; 32];
        key.copy_from_slice(&crate::util::ids::random(32)?);
        Ok(encode_key(&key))
    }

    async fn public_key(&mut self, private_key: String) -> wasmtime::Result<Result<String, Error>> {
        Ok(decode_key("private-key", &private_key).map(|k| encode_key(&public_of(&k))))
    }

    async fn list_devices(&mut self) -> wasmtime::Result<Result<Vec<String>, Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.list_devices().await
        })
        .await
    }

    async fn get_device(&mut self, name: String) -> wasmtime::Result<Result<Device, Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.get_device(&name).await
        })
        .await
    }

    async fn create_device(&mut self, name: String) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.create_device(&name).await
        })
        .await
    }

    async fn delete_device(&mut self, name: String) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.delete_device(&name).await
        })
        .await
    }

    async fn configure_device(
        &mut self,
        name: String,
        private_key: Option<String>,
        listen_port: Option<u16>,
        replace_peers: bool,
    ) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.configure_device(&name, private_key.as_deref(), listen_port, replace_peers)
                .await
        })
        .await
    }

    async fn set_peer(
        &mut self,
        name: String,
        peer: PeerConfig,
    ) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.set_peer(&name, &peer).await
        })
        .await
    }

    async fn remove_peer(
        &mut self,
        name: String,
        public_key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.remove_peer(&name, &public_key).await
        })
        .await
    }

    async fn set_up(&mut self, name: String, up: bool) -> wasmtime::Result<Result<(), Error>> {
        call(&self.plugin, self.deadline, |wg| async move {
            wg.set_up(&name, up).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grants;
    use crate::runtime::{test_ctx, test_shared};
    use crate::util::deadline::DeadlineExceeded;

    fn grant(devices: &[&str], backend: WireguardBackend, netns: Option<&str>) -> Grants {
        Grants {
            wireguard: Some(WireguardGrant {
                devices: devices.iter().map(|s| s.to_string()).collect(),
                backend,
                userspace_binary: "wireguard-go".into(),
                netns: netns.map(String::from),
            }),
            ..Grants::default()
        }
    }

    #[test]
    fn generated_keys_are_clamped_x25519_pairs_matching_the_rfc_vector() {
        // RFC 7748 section 6.1, Alice.
        let private: [u8; 32] =
            unhex_key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        assert_eq!(
            hex_key(&public_of(&private)),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let k = new_private_key().unwrap();
        assert_eq!(k[0] & 7, 0);
        assert_eq!(k[31] & 0xc0, 0x40);
    }

    #[tokio::test]
    async fn keys_round_trip_through_base64_and_bad_ones_are_invalid() {
        let host = test_shared();
        let mut ctx = test_ctx(&host, "a", Grants::default());
        let pair = Host::generate_keypair(&mut ctx).await.unwrap();
        assert_eq!(pair.private_key.len(), 44);
        assert_eq!(
            Host::public_key(&mut ctx, pair.private_key.clone())
                .await
                .unwrap()
                .unwrap(),
            pair.public_key
        );
        let psk = Host::generate_preshared_key(&mut ctx).await.unwrap();
        assert_eq!(BASE64.decode(&psk).unwrap().len(), 32);
        for bad in [
            "",
            "abc",
            "AAAA",
            &pair.private_key[..43],
            &format!("{}\nlisten_port=1", pair.private_key),
        ] {
            match Host::public_key(&mut ctx, bad.to_string()).await.unwrap() {
                Err(Error::Invalid(m)) => assert!(m.contains("base64 of 32 bytes"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn peers_become_uapi_lines_only_from_checked_values() {
        let key = encode_key(&[7u8; 32]);
        let mut peer = PeerConfig {
            public_key: key.clone(),
            preshared_key: None,
            endpoint: Some("[2001:db8::1]:51820".into()),
            allowed_ips: vec![
                "10.0.0.2/32".into(),
                "10.1.0.0/16".into(),
                "2001:db8::5".into(),
            ],
            persistent_keepalive: Some(25),
        };
        assert_eq!(
            peer_lines(&peer).unwrap(),
            format!(
                "public_key={}\npreshared_key={}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nallowed_ip=10.1.0.0/16\nallowed_ip=2001:db8::5/128\n",
                "07".repeat(32),
                "00".repeat(32)
            )
        );
        for (field, value, needle) in [
            ("endpoint", "host.example:51820", "not ip:port"),
            ("endpoint", "10.0.0.1:0", "cannot be reached"),
            ("endpoint", "10.0.0.1:1\nremove=true", "not ip:port"),
            ("allowed", "10.0.0.2/33", "over 32"),
            ("allowed", "10.0.0.2/", "not a CIDR"),
            ("allowed", "10.0.0.2/+1", "not a CIDR"),
            ("allowed", "10.0.0.2/32\nremove=true", "not a CIDR"),
            ("psk", "short", "preshared-key"),
            ("key", "AAAA", "public-key"),
        ] {
            let mut p = peer.clone();
            match field {
                "endpoint" => p.endpoint = Some(value.into()),
                "allowed" => p.allowed_ips = vec![value.into()],
                "psk" => p.preshared_key = Some(value.into()),
                _ => p.public_key = value.into(),
            }
            match peer_lines(&p) {
                Err(Error::Invalid(m)) => assert!(m.contains(needle), "{value:?}: {m}"),
                other => panic!("{value:?}: {other:?}"),
            }
        }
        peer.allowed_ips = vec!["10.0.0.1/32".into(); MAX_ALLOWED_IPS + 1];
        assert!(matches!(peer_lines(&peer), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_uapi_get_reads_as_a_device_without_its_secrets() {
        let private = [0x11u8; 32];
        let text = format!(
            "private_key={}\nlisten_port=51999\npublic_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=10.0.0.9:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=92\nrx_bytes=180\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=10.0.1.0/24\npublic_key={}\npreshared_key={}\nlast_handshake_time_sec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\nerrno=0\n\n",
            hex_key(&private),
            "22".repeat(32),
            "33".repeat(32),
            "44".repeat(32),
            "00".repeat(32),
        );
        let r = parse_get(&text);
        assert_eq!(r.public_key, Some(encode_key(&public_of(&private))));
        assert_eq!(r.listen_port, Some(51999));
        assert_eq!(r.peers.len(), 2);
        let (a, b) = (&r.peers[0], &r.peers[1]);
        assert_eq!(a.public_key, encode_key(&[0x22; 32]));
        assert!(a.has_preshared_key);
        assert_eq!(a.endpoint.as_deref(), Some("10.0.0.9:51820"));
        assert_eq!(a.allowed_ips, ["10.0.0.2/32", "10.0.1.0/24"]);
        assert_eq!(a.latest_handshake, Some(1_700_000_000));
        assert_eq!(
            (a.rx_bytes, a.tx_bytes, a.persistent_keepalive),
            (180, 92, Some(25))
        );
        assert!(!b.has_preshared_key);
        assert_eq!(
            (
                b.latest_handshake,
                b.persistent_keepalive,
                b.endpoint.clone()
            ),
            (None, None, None)
        );
        let empty = parse_get("errno=0\n\n");
        assert!(
            empty.public_key.is_none() && empty.listen_port.is_none() && empty.peers.is_empty()
        );
    }

    #[tokio::test]
    async fn without_the_grant_or_outside_the_patterns_every_call_is_denied() {
        let host = test_shared();
        let mut ctx = test_ctx(&host, "a", Grants::default());
        assert!(matches!(
            Host::list_devices(&mut ctx).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            Host::create_device(&mut ctx, "wg0".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        // A namespace that does not exist: the refusal must come first.
        let mut ctx = test_ctx(
            &host,
            "a",
            grant(
                &["wg?"],
                WireguardBackend::Auto,
                Some("/nonexistent/wasmgate-wg"),
            ),
        );
        let peer = PeerConfig {
            public_key: encode_key(&[1; 32]),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec![],
            persistent_keepalive: None,
        };
        for r in [
            Host::get_device(&mut ctx, "eth0".into())
                .await
                .unwrap()
                .map(drop),
            Host::create_device(&mut ctx, "wg10".into()).await.unwrap(),
            Host::delete_device(&mut ctx, "lo".into()).await.unwrap(),
            Host::configure_device(&mut ctx, "wgx0".into(), None, Some(1), false)
                .await
                .unwrap(),
            Host::set_peer(&mut ctx, "x".into(), peer).await.unwrap(),
            Host::remove_peer(&mut ctx, "x".into(), encode_key(&[1; 32]))
                .await
                .unwrap(),
            Host::set_up(&mut ctx, "x".into(), true).await.unwrap(),
        ] {
            match r {
                Err(Error::Denied(m)) => assert!(m.contains("is outside the grant"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        match Host::list_devices(&mut ctx).await.unwrap() {
            Err(Error::Os(m)) => assert!(m.contains("/nonexistent/wasmgate-wg"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_kernel_backend_without_the_module_answers_a_clear_os_error() {
        // The probe agrees with the kernel: the family resolves exactly when
        // the module is there (asking for it loads it where it can be).
        let probed = Kernel::open(None).expect("generic netlink").is_some();
        assert_eq!(probed, Path::new("/sys/module/wireguard").exists());
        let host = test_shared();
        let mut ctx = test_ctx(&host, "a", grant(&["wg*"], WireguardBackend::Kernel, None));
        if probed {
            // Creating a device in the host's namespace is not this test's
            // to do; tests/e2e/wireguard.rs drives a kernel device in a
            // namespace of its own.
            eprintln!("the kernel has WireGuard: the missing-module error is not shown here");
        } else {
            match Host::create_device(&mut ctx, "wg0".into()).await.unwrap() {
                Err(Error::Os(m)) => {
                    assert!(
                        m.contains("no WireGuard") && m.contains("backend: userspace"),
                        "{m}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        match Host::create_device(&mut ctx, "wg0123456789abcdef".into())
            .await
            .unwrap()
        {
            Err(Error::Invalid(m)) => assert!(m.contains("cannot be a device name"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn auto_takes_userspace_where_the_probe_finds_no_wireguard_and_the_probe_is_remembered() {
        let host = test_shared();
        let ctx = test_ctx(&host, "a", grant(&["wg*"], WireguardBackend::Auto, None));
        let wg = Wg::open(&ctx.plugin).unwrap();
        assert_eq!(host.wireguard.kernel_known(None), None);
        let has = wg.kernel_available().await.unwrap();
        // The family resolves exactly where the module is there (asking for
        // it loads it where it can be loaded).
        assert_eq!(has, Path::new("/sys/module/wireguard").exists());
        assert_eq!(
            host.wireguard.kernel_known(None).map(|f| f.is_some()),
            Some(has)
        );
        let chosen = wg.backend().await.unwrap();
        if has {
            assert_eq!(chosen, Kind::Kernel);
        } else {
            eprintln!("this kernel has no WireGuard: auto takes wireguard-go");
            assert_eq!(chosen, Kind::Userspace);
        }

        // A remembered answer is used as it is: these namespaces do not
        // exist, so a probe there would fail.
        host.wireguard
            .remember_kernel(Some(Path::new("/nonexistent/with")), Some(0x1d));
        host.wireguard
            .remember_kernel(Some(Path::new("/nonexistent/without")), None);
        for (netns, backend, expected) in [
            (
                "/nonexistent/with",
                WireguardBackend::Auto,
                Ok(Kind::Kernel),
            ),
            (
                "/nonexistent/with",
                WireguardBackend::Kernel,
                Ok(Kind::Kernel),
            ),
            (
                "/nonexistent/without",
                WireguardBackend::Auto,
                Ok(Kind::Userspace),
            ),
            (
                "/nonexistent/without",
                WireguardBackend::Userspace,
                Ok(Kind::Userspace),
            ),
            (
                "/nonexistent/without",
                WireguardBackend::Kernel,
                Err("no WireGuard module"),
            ),
            (
                "/nonexistent/unprobed",
                WireguardBackend::Userspace,
                Ok(Kind::Userspace),
            ),
            (
                "/nonexistent/unprobed",
                WireguardBackend::Auto,
                Err("/nonexistent/unprobed"),
            ),
        ] {
            let ctx = test_ctx(&host, "a", grant(&["wg*"], backend, Some(netns)));
            let got = Wg::open(&ctx.plugin).unwrap().backend().await;
            match (got, expected) {
                (Ok(kind), Ok(want)) => assert_eq!(kind, want, "{netns}"),
                (Err(Error::Os(m)), Err(needle)) => assert!(m.contains(needle), "{netns}: {m}"),
                (got, want) => panic!("{netns}: {got:?}, wanted {want:?}"),
            }
        }
        // A probe that failed is not remembered.
        assert_eq!(
            host.wireguard
                .kernel_known(Some(Path::new("/nonexistent/unprobed"))),
            None
        );
    }

    #[test]
    fn a_kernel_dump_split_over_messages_reads_as_one_device_record() {
        use super::super::wireguard_kernel::{device_of, read_answers, wire::*};
        use netlink_packet_generic::GenlMessage;
        use netlink_packet_wireguard::WireguardMessage;

        const FAMILY: u16 = 0x1d;
        const SEQ: u32 = 42;
        let private = [0x11u8; 32];
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let fd00: std::net::Ipv6Addr = "fd00:1::".parse().unwrap();
        // As the kernel writes it: the device's attributes in the first
        // message only; the second peer's allowed IPs go on in the next
        // message under its public key alone.
        let first = wireguard(
            FAMILY,
            NLM_F_MULTI,
            SEQ,
            WG_CMD_GET_DEVICE,
            &[
                nla(6, &51820u16.to_ne_bytes()),
                nla(7, &0u32.to_ne_bytes()),
                nla(1, &7u32.to_ne_bytes()),
                nla(2, b"wg0\0"),
                nla(3, &private),
                nla(4, &public_of(&private)),
                nest(
                    8,
                    &[
                        nest(
                            0,
                            &[
                                nla(1, &[0x22; 32]),
                                nla(2, &[0x33; 32]),
                                nla(6, &timespec(1_700_000_123, 456_000_000)),
                                nla(5, &25u16.to_ne_bytes()),
                                nla(7, &180u64.to_ne_bytes()),
                                nla(8, &(5u64 << 32).to_ne_bytes()),
                                nla(10, &1u32.to_ne_bytes()),
                                nla(4, &sockaddr_in([192, 0, 2, 9], 51820)),
                                nest(
                                    9,
                                    &[
                                        allowed_ip(2, &[10, 0, 0, 2], 32),
                                        allowed_ip(10, &fd00.octets(), 64),
                                    ],
                                ),
                            ],
                        ),
                        nest(
                            0,
                            &[
                                nla(1, &[0x44; 32]),
                                nla(2, &[0; 32]),
                                nla(6, &timespec(0, 0)),
                                nla(5, &0u16.to_ne_bytes()),
                                nla(7, &0u64.to_ne_bytes()),
                                nla(8, &0u64.to_ne_bytes()),
                                nla(10, &1u32.to_ne_bytes()),
                                nla(4, &sockaddr_in6(v6.octets(), 51821)),
                                nest(9, &[allowed_ip(2, &[10, 0, 1, 0], 24)]),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let second = wireguard(
            FAMILY,
            NLM_F_MULTI,
            SEQ,
            WG_CMD_GET_DEVICE,
            &[nest(
                8,
                &[nest(
                    0,
                    &[
                        nla(1, &[0x44; 32]),
                        nest(9, &[allowed_ip(2, &[10, 0, 2, 0], 24)]),
                    ],
                )],
            )],
        );
        let mut answers: Vec<GenlMessage<WireguardMessage>> = Vec::new();
        assert!(!read_answers(&first, SEQ, &mut answers).unwrap());
        assert!(read_answers(&[second, done(SEQ)].concat(), SEQ, &mut answers).unwrap());
        let device = device_from_kernel(
            "wg0",
            true,
            device_of(answers.into_iter().map(|m| m.payload)),
        );
        let expected = Device {
            name: "wg0".into(),
            public_key: Some(encode_key(&public_of(&private))),
            listen_port: Some(51820),
            up: true,
            peers: vec![
                Peer {
                    public_key: encode_key(&[0x22; 32]),
                    has_preshared_key: true,
                    endpoint: Some("192.0.2.9:51820".into()),
                    allowed_ips: vec!["10.0.0.2/32".into(), "fd00:1::/64".into()],
                    latest_handshake: Some(1_700_000_123),
                    rx_bytes: 180,
                    tx_bytes: 5 << 32,
                    persistent_keepalive: Some(25),
                },
                Peer {
                    public_key: encode_key(&[0x44; 32]),
                    has_preshared_key: false,
                    endpoint: Some("[2001:db8::1]:51821".into()),
                    allowed_ips: vec!["10.0.1.0/24".into(), "10.0.2.0/24".into()],
                    latest_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: None,
                },
            ],
        };
        // The binding's records have no PartialEq; Debug shows every field.
        assert_eq!(format!("{device:?}"), format!("{expected:?}"));
        // Never a private key, and an unconfigured device has no public key
        // or port (the kernel reports zeroes).
        let text = format!("{device:?}");
        assert!(!text.contains(&encode_key(&private)), "{text}");
        let bare = wireguard(
            FAMILY,
            NLM_F_MULTI,
            SEQ,
            WG_CMD_GET_DEVICE,
            &[nla(6, &0u16.to_ne_bytes()), nla(4, &[0; 32])],
        );
        let mut answers: Vec<GenlMessage<WireguardMessage>> = Vec::new();
        assert!(read_answers(&[bare, done(SEQ)].concat(), SEQ, &mut answers).unwrap());
        let device = device_from_kernel(
            "wg1",
            false,
            device_of(answers.into_iter().map(|m| m.payload)),
        );
        assert_eq!(
            (device.public_key, device.listen_port, device.peers.len()),
            (None, None, 0)
        );
    }

    #[tokio::test]
    async fn a_call_past_the_request_deadline_traps_as_a_deadline() {
        let host = test_shared();
        let mut ctx = test_ctx(&host, "a", grant(&["wg*"], WireguardBackend::Auto, None));
        ctx.deadline = Instant::now();
        let trap = Host::list_devices(&mut ctx)
            .await
            .expect_err("a trap, not an answer");
        assert!(
            trap.downcast_ref::<DeadlineExceeded>().is_some(),
            "{trap:?}"
        );
    }

    #[test]
    fn a_missing_userspace_binary_is_named() {
        match resolve_binary("wasmgate-no-such-wireguard") {
            Err(Error::Os(m)) => assert!(
                m.contains("`wasmgate-no-such-wireguard` is not in PATH"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(resolve_binary("/opt/wg").unwrap(), PathBuf::from("/opt/wg"));
    }
}
