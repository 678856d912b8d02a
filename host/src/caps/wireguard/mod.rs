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
//! generic netlink ([`kernel`]) serves `backend: kernel`,
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
use wasmtime::component::{HasData, Linker};

use super::net::grant::{glob_match, valid_link_name};
use super::net::links::{errno, find_link, link_name, set_up_by_index};
use super::wit::wireguard::{Device, Error, Host, Keypair, Peer, PeerConfig};
use super::{Call, Capability, CapsHost, HostCaps, HostEnv, PluginCaps, PluginEnv, Trappable};

pub mod grant;
pub mod kernel;
mod keys;
mod peers;
mod uapi;
mod userspace;

pub use grant::{WireguardBackend, WireguardGrant};
use kernel::{Change, Kernel, KernelDevice, PeerChange};
use keys::*;
use peers::*;
use uapi::*;
pub use userspace::Devices;
use userspace::*;

type WgError = Trappable<Error>;

pub struct Wireguard;

impl Capability for Wireguard {
    const NAME: &'static str = "wireguard";
    const EXAMPLE: &'static str = "{ devices: [\"wg*\"] }";
    type Grant = Option<WireguardGrant>;
    /// The userspace implementation's child processes, and the kernel
    /// probes per namespace.
    type State = Devices;
    type PluginState = ();

    fn validate(grant: &Option<WireguardGrant>) -> Result<(), (String, String)> {
        grant.as_ref().map_or(Ok(()), WireguardGrant::validate)
    }

    fn state(_: &HostEnv) -> Devices {
        Devices::default()
    }

    fn plugin_state(_: &PluginEnv<'_>, _: &Option<WireguardGrant>) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::wireguard::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's grant, the host's devices and netlink
/// connections, the deadline.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    host: &'a HostCaps,
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
            host: call.host,
            deadline: call.deadline,
        }
    }

    fn granted(&self) -> Result<(), WgError> {
        if self.plugin.grants.wireguard.is_none() {
            return Err(Trappable::trap(self.plugin.not_granted(Wireguard::NAME)));
        }
        Ok(())
    }
}

/// The longest one call may take when the request's deadline is further:
/// starting `wireguard-go` takes a few hundred milliseconds, the rest
/// microseconds.
pub const WG_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refused name an error message repeats.
const MAX_NAME_IN_MESSAGE: usize = 64;

// ---------------------------------------------------------------------------
// Arguments

/// A name as repeated in an error message: bounded.
fn shown(name: &str) -> String {
    crate::util::text::shown(name, MAX_NAME_IN_MESSAGE)
}

fn no_device(name: &str) -> Error {
    Error::NotFound(format!("no WireGuard device `{}`", shown(name)))
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
// One call

/// One call's view of the capability: the grant, re-checked, and the
/// netlink connection of its namespace.
struct Wg<'a> {
    grant: &'a WireguardGrant,
    plugin: &'a PluginCaps,
    host: &'a HostCaps,
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
    fn open(grant: &'a WireguardGrant, plugin: &'a PluginCaps, host: &'a HostCaps) -> Wg<'a> {
        Wg {
            grant,
            plugin,
            host,
            netns: grant.netns_path(),
        }
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
        self.host
            .net
            .handle(self.netns.as_deref())
            .await
            .map_err(from_net)
    }

    fn netlink_failed(&self, e: rtnetlink::Error) -> Error {
        if e == rtnetlink::Error::RequestFailed {
            self.host.net.forget(self.netns.as_deref());
        }
        from_net(super::net::links::os(e))
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
        let devices = &self.host.wireguard;
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
        let devices = &self.host.wireguard;
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
        let devices = &self.host.wireguard;
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
fn from_net(e: crate::caps::wit::net::Error) -> Error {
    use crate::caps::wit::net::Error as Net;
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
async fn call<'a, T, F, Fut>(view: &View<'a>, f: F) -> Result<T, WgError>
where
    F: FnOnce(Wg<'a>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let Some(grant) = view.plugin.grants.wireguard.as_ref() else {
        return Err(Trappable::trap(view.plugin.not_granted(Wireguard::NAME)));
    };
    let wg = Wg::open(grant, view.plugin, view.host);
    match crate::util::deadline::bound(view.deadline, WG_TIMEOUT, f(wg))
        .await
        .map_err(Trappable::trap)?
    {
        Some(r) => Ok(r?),
        None => Err(Error::Os(format!(
            "WireGuard did not answer within {} s",
            WG_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

impl Host for View<'_> {
    fn convert_error(&mut self, err: WgError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    async fn generate_keypair(&mut self) -> wasmtime::Result<Keypair> {
        if self.plugin.grants.wireguard.is_none() {
            return Err(self.plugin.not_granted(Wireguard::NAME));
        }
        let private = new_private_key()?;
        Ok(Keypair {
            public_key: encode_key(&public_of(&private)),
            private_key: encode_key(&private),
        })
    }

    async fn generate_preshared_key(&mut self) -> wasmtime::Result<String> {
        if self.plugin.grants.wireguard.is_none() {
            return Err(self.plugin.not_granted(Wireguard::NAME));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&crate::util::ids::random(32)?);
        Ok(encode_key(&key))
    }

    async fn public_key(&mut self, private_key: String) -> Result<String, WgError> {
        self.granted()?;
        Ok(encode_key(&public_of(&decode_key(
            "private-key",
            &private_key,
        )?)))
    }

    async fn list_devices(&mut self) -> Result<Vec<String>, WgError> {
        call(self, |wg| async move { wg.list_devices().await }).await
    }

    async fn get_device(&mut self, name: String) -> Result<Device, WgError> {
        call(self, |wg| async move { wg.get_device(&name).await }).await
    }

    async fn create_device(&mut self, name: String) -> Result<(), WgError> {
        call(self, |wg| async move { wg.create_device(&name).await }).await
    }

    async fn delete_device(&mut self, name: String) -> Result<(), WgError> {
        call(self, |wg| async move { wg.delete_device(&name).await }).await
    }

    async fn configure_device(
        &mut self,
        name: String,
        private_key: Option<String>,
        listen_port: Option<u16>,
        replace_peers: bool,
    ) -> Result<(), WgError> {
        call(self, |wg| async move {
            wg.configure_device(&name, private_key.as_deref(), listen_port, replace_peers)
                .await
        })
        .await
    }

    async fn set_peer(&mut self, name: String, peer: PeerConfig) -> Result<(), WgError> {
        call(self, |wg| async move { wg.set_peer(&name, &peer).await }).await
    }

    async fn remove_peer(&mut self, name: String, public_key: String) -> Result<(), WgError> {
        call(self, |wg| async move {
            wg.remove_peer(&name, &public_key).await
        })
        .await
    }

    async fn set_up(&mut self, name: String, up: bool) -> Result<(), WgError> {
        call(self, |wg| async move { wg.set_up(&name, up).await }).await
    }
}

#[cfg(test)]
mod tests;
