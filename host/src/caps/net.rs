//! `net`: network links, their addresses and the neighbour (ARP/NDP) table
//! through netlink (rtnetlink), limited to the links whose names match the
//! plugin's grant patterns, in the grant's network namespace.
//!
//! Steps of every call, in order:
//! 1. Re-check the grant: withheld, a link name outside the patterns, or a
//!    change without `write: true` is a typed `denied`. A link outside the
//!    patterns is denied whether or not it exists, so a plugin learns nothing
//!    about links it may not see.
//! 2. Take the netlink connection of the grant's namespace from
//!    [`Connections`] (opened on first use, then shared by every plugin and
//!    request that names the same namespace).
//! 3. Send the request and await the kernel's answer, bounded by
//!    [`NET_TIMEOUT`].
//!
//! The host functions are async (see `bindings.rs`): the call runs on the
//! request's fibre, which yields to tokio while netlink answers, so no
//! executor thread blocks and the epoch deadline keeps working.
//!
//! A netlink socket belongs for its whole life to the network namespace of
//! the thread that created it. For a grant naming a namespace, a short-lived
//! OS thread enters it with `setns`, creates the socket and ends; the socket
//! then serves from any thread. No thread of tokio's ever changes namespace.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourState as KernelNeighbourState,
};
use rtnetlink::sys::{TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkUnspec};
use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use crate::bindings::net::{Address, Error, Host, Link, Neighbour, NeighbourState, OperState};
use crate::config::{MAX_LINK_NAME, NetGrant};
use crate::runtime::{Ctx, PluginShared};

pub const CAP: Capability = Capability {
    name: "net",
    granted: |g| g.net.is_some(),
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::net::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

/// The longest a netlink call may take: the kernel answers in microseconds,
/// and the request's own deadline is not checked while the host awaits.
pub const NET_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a refused link name an error message repeats.
const MAX_NAME_IN_MESSAGE: usize = 64;

/// Whether `name` matches the glob `pattern`: `*` matches any run of
/// characters (also none), `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the kernel could have a link of this name (`dev_valid_name`).
pub(crate) fn valid_link_name(name: &str) -> bool {
    (1..=MAX_LINK_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The netlink connection of each namespace in use, opened on first use.
#[derive(Default)]
pub struct Connections {
    /// Namespace file (`None`: the host's) -> the identity of the namespace
    /// the connection was opened in, and its handle.
    open: Mutex<HashMap<Option<PathBuf>, (NsId, Handle)>>,
}

/// A namespace file's (device, inode): a namespace deleted and made again
/// under the same name is a new namespace and gets a new connection.
type NsId = Option<(u64, u64)>;

impl Connections {
    /// The connection for `netns` (`None`: the host's namespace).
    pub(crate) async fn handle(&self, netns: Option<&Path>) -> Result<Handle, Error> {
        let id: NsId = match netns {
            None => None,
            Some(path) => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    // The namespace is gone: let go of it, which a connection
                    // left open would keep alive.
                    self.forget(netns);
                    Error::Os(format!("network namespace {}: {}", path.display(), e))
                })?;
                Some((meta.dev(), meta.ino()))
            }
        };
        let key = netns.map(Path::to_path_buf);
        if let Some((open_id, handle)) = self.lock().get(&key)
            && *open_id == id
        {
            return Ok(handle.clone());
        }
        let handle = match netns {
            None => {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| Error::Os(format!("netlink: {}", e)))?;
                tokio::spawn(connection);
                handle
            }
            Some(path) => {
                let socket = socket_in(path).await.map_err(|e| {
                    Error::Os(format!("network namespace {}: {}", path.display(), e))
                })?;
                // SAFETY: the descriptor is a netlink socket this function
                // owns and hands over whole.
                let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
                let (connection, handle, _) = rtnetlink::from_socket(socket);
                tokio::spawn(connection);
                handle
            }
        };
        // A replaced entry drops the old handle, which ends its connection
        // task and closes its socket, releasing a namespace that is gone.
        let mut open = self.lock();
        match open.get(&key) {
            Some((open_id, existing)) if *open_id == id => Ok(existing.clone()),
            _ => {
                open.insert(key, (id, handle.clone()));
                Ok(handle)
            }
        }
    }

    /// Drops the connection for `netns` after it failed as a whole.
    pub(crate) fn forget(&self, netns: Option<&Path>) {
        self.lock().remove(&netns.map(Path::to_path_buf));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<PathBuf>, (NsId, Handle)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A netlink route socket created inside the namespace at `path`.
async fn socket_in(path: &Path) -> io::Result<rtnetlink::sys::Socket> {
    let ns = std::fs::File::open(path)?;
    crate::util::netns::make_in_async(ns, || rtnetlink::sys::Socket::new(NETLINK_ROUTE)).await
}

/// The errno of a kernel refusal, if it was one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

pub(crate) fn os(e: rtnetlink::Error) -> Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => Error::Os(m.to_io().to_string()),
        other => Error::Os(format!("netlink: {other}")),
    }
}

/// A name as repeated in an error message: bounded.
fn shown(name: &str) -> String {
    crate::util::text::shown(name, MAX_NAME_IN_MESSAGE)
}

fn no_link(name: &str) -> Error {
    Error::NotFound(format!("no link `{}`", shown(name)))
}

/// One call's view of the capability: the grant, re-checked, and the
/// connection of its namespace.
struct Net<'a> {
    grant: &'a NetGrant,
    plugin: &'a PluginShared,
    netns: Option<PathBuf>,
    handle: Handle,
}

/// Whether the call only reads or also changes something.
#[derive(PartialEq)]
enum Access {
    Read,
    Write,
}

impl<'a> Net<'a> {
    async fn open(plugin: &'a PluginShared, access: Access) -> Result<Net<'a>, Error> {
        let grant = plugin
            .grants
            .net
            .as_ref()
            .ok_or_else(|| Error::Denied("`net` is not granted to this plugin".into()))?;
        if access == Access::Write && !grant.write {
            return Err(Error::Denied(
                "the grant does not allow changes (`net.write` is false)".into(),
            ));
        }
        let netns = grant.netns_path();
        let handle = plugin.host.net.handle(netns.as_deref()).await?;
        Ok(Net {
            grant,
            plugin,
            netns,
            handle,
        })
    }

    fn allowed(&self, name: &str) -> bool {
        self.grant.links.iter().any(|p| glob_match(p, name))
    }

    fn check_link(&self, name: &str) -> Result<(), Error> {
        if self.allowed(name) {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "link `{}` is outside the grant",
                shown(name)
            )))
        }
    }

    /// Maps a failed request; a dead connection is dropped so that the next
    /// call opens a new one.
    fn failed(&self, e: rtnetlink::Error) -> Error {
        if e == rtnetlink::Error::RequestFailed {
            self.plugin.host.net.forget(self.netns.as_deref());
        }
        os(e)
    }

    /// The link called `name`, which the caller has checked against the grant.
    async fn link_by_name(&self, name: &str) -> Result<LinkMessage, Error> {
        if !valid_link_name(name) {
            return Err(no_link(name));
        }
        match find_link(&self.handle, name).await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(no_link(name)),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Every link whose name the grant matches, by index.
    async fn granted_links(&self) -> Result<BTreeMap<u32, LinkMessage>, Error> {
        let mut out = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(|e| self.failed(e))? {
            if link_name(&link).is_some_and(|n| self.allowed(n)) {
                out.insert(link.header.index, link);
            }
        }
        Ok(out)
    }

    /// The addresses of link `only` (of every link when `None`), by link index.
    async fn addresses(&self, only: Option<u32>) -> Result<BTreeMap<u32, Vec<Address>>, Error> {
        let mut out: BTreeMap<u32, Vec<Address>> = BTreeMap::new();
        let mut request = self.handle.address().get();
        if let Some(index) = only {
            request = request.set_link_index_filter(index);
        }
        let mut addresses = request.execute();
        while let Some(msg) = addresses.try_next().await.map_err(|e| self.failed(e))? {
            if let Some(ip) = address_of(&msg) {
                out.entry(msg.header.index).or_default().push(Address {
                    address: ip.to_string(),
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    async fn list_links(&self) -> Result<Vec<Link>, Error> {
        let links = self.granted_links().await?;
        let mut addresses = self.addresses(None).await?;
        Ok(links
            .values()
            .filter_map(|l| link_record(l, addresses.remove(&l.header.index).unwrap_or_default()))
            .collect())
    }

    async fn get_link(&self, name: &str) -> Result<Link, Error> {
        self.check_link(name)?;
        let link = self.link_by_name(name).await?;
        let mut addresses = self.addresses(Some(link.header.index)).await?;
        link_record(
            &link,
            addresses.remove(&link.header.index).unwrap_or_default(),
        )
        .ok_or_else(|| no_link(name))
    }

    async fn list_neighbours(&self, link: Option<&str>) -> Result<Vec<Neighbour>, Error> {
        let names: BTreeMap<u32, String> = match link {
            Some(name) => {
                self.check_link(name)?;
                let link = self.link_by_name(name).await?;
                BTreeMap::from([(link.header.index, name.to_string())])
            }
            None => self
                .granted_links()
                .await?
                .into_iter()
                .filter_map(|(i, l)| Some((i, link_name(&l)?.to_string())))
                .collect(),
        };
        let mut out = Vec::new();
        // An unspecified family dumps the ARP and the NDP tables (not the
        // bridge forwarding database, which has a family of its own).
        let mut neighbours = self.handle.neighbours().get().execute();
        while let Some(msg) = neighbours.try_next().await.map_err(|e| self.failed(e))? {
            let Some(link) = names.get(&msg.header.ifindex) else {
                continue;
            };
            let mut address = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        address = Some(ip.to_string())
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                        address = Some(ip.to_string())
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) if !bytes.is_empty() => {
                        mac = Some(hex_mac(bytes))
                    }
                    _ => {}
                }
            }
            if let Some(address) = address {
                out.push(Neighbour {
                    link: link.clone(),
                    address,
                    mac,
                    state: neighbour_state(msg.header.state),
                });
            }
        }
        Ok(out)
    }

    async fn set_link_up(&self, name: &str, up: bool) -> Result<(), Error> {
        self.check_link(name)?;
        // By the index of the link whose own name matched, not by name: the
        // kernel would also take an alternative name outside the grant.
        let index = self.link_by_name(name).await?.header.index;
        match set_up_by_index(&self.handle, index, up).await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(no_link(name)),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn add_address(&self, name: &str, address: &Address) -> Result<(), Error> {
        self.check_link(name)?;
        let ip = parse_address(address)?;
        let index = self.link_by_name(name).await?.header.index;
        match self
            .handle
            .address()
            .add(index, ip, address.prefix_len)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(Error::Os(format!(
                "{ip}/{} is already on link `{}`",
                address.prefix_len,
                shown(name)
            ))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn remove_address(&self, name: &str, address: &Address) -> Result<(), Error> {
        self.check_link(name)?;
        let ip = parse_address(address)?;
        let index = self.link_by_name(name).await?.header.index;
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
            .set_prefix_length_filter(address.prefix_len)
            .execute();
        let Some(msg) = found.try_next().await.map_err(|e| self.failed(e))? else {
            return Err(Error::NotFound(format!(
                "{ip}/{} is not on link `{}`",
                address.prefix_len,
                shown(name)
            )));
        };
        drop(found);
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Err(Error::NotFound(format!(
                "{ip}/{} is not on link `{}`",
                address.prefix_len,
                shown(name)
            ))),
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// The link whose own name is `name`, if there is one. The kernel also finds
/// a link by an alternative name (`ip link property add ... altname`), which
/// a grant's patterns did not see: only the link's own name counts.
pub(crate) async fn find_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(link)) if link_name(&link) == Some(name) => Ok(Some(link)),
        Ok(_) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets the link with this index administratively up or down.
pub(crate) async fn set_up_by_index(
    handle: &Handle,
    index: u32,
    up: bool,
) -> Result<(), rtnetlink::Error> {
    let builder = LinkUnspec::new_with_index(index);
    let message = if up { builder.up() } else { builder.down() }.build();
    handle.link().set(message).execute().await
}

/// An address a plugin asks to add or remove, checked.
fn parse_address(a: &Address) -> Result<IpAddr, Error> {
    let ip: IpAddr = a.address.parse().map_err(|_| {
        Error::Invalid(format!(
            "`{}` is not an IPv4 or IPv6 address",
            shown(&a.address)
        ))
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if a.prefix_len > max {
        return Err(Error::Invalid(format!(
            "prefix length {} is over {max}",
            a.prefix_len
        )));
    }
    if ip.is_multicast() || ip.is_unspecified() {
        return Err(Error::Invalid(format!("{ip} cannot be assigned to a link")));
    }
    Ok(ip)
}

pub(crate) fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The local address of an address message: `IFA_LOCAL` where present (on a
/// point-to-point link `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn link_record(link: &LinkMessage, addresses: Vec<Address>) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut oper_state = OperState::Unknown;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) if !bytes.is_empty() => mac = Some(hex_mac(bytes)),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::OperState(s) => oper_state = oper(*s),
            _ => {}
        }
    }
    Some(Link {
        name: name?,
        index: link.header.index,
        mac,
        mtu,
        admin_up: link.header.flags.contains(LinkFlags::Up),
        oper_state,
        addresses,
    })
}

fn hex_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn oper(s: State) -> OperState {
    match s {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::Dormant => OperState::Dormant,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::NotPresent => OperState::NotPresent,
        State::Testing => OperState::Testing,
        _ => OperState::Unknown,
    }
}

fn neighbour_state(s: KernelNeighbourState) -> NeighbourState {
    match s {
        KernelNeighbourState::Incomplete => NeighbourState::Incomplete,
        KernelNeighbourState::Reachable => NeighbourState::Reachable,
        KernelNeighbourState::Stale => NeighbourState::Stale,
        KernelNeighbourState::Delay => NeighbourState::Delay,
        KernelNeighbourState::Probe => NeighbourState::Probe,
        KernelNeighbourState::Failed => NeighbourState::Failed,
        KernelNeighbourState::Noarp => NeighbourState::Noarp,
        KernelNeighbourState::Permanent => NeighbourState::Permanent,
        _ => NeighbourState::None,
    }
}

/// Runs one call: opens the view (re-checking the grant) and bounds the
/// whole call by [`NET_TIMEOUT`] and by the request's own deadline, which
/// the epoch callback cannot check while the fibre waits here: running
/// past it traps the call as a deadline, like wasm code running past it.
async fn call<'a, T, F, Fut>(
    plugin: &'a PluginShared,
    deadline: Instant,
    access: Access,
    f: F,
) -> wasmtime::Result<Result<T, Error>>
where
    F: FnOnce(Net<'a>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let work = async {
        let net = Net::open(plugin, access).await?;
        f(net).await
    };
    match crate::util::deadline::bound(deadline, NET_TIMEOUT, work).await? {
        Some(r) => Ok(r),
        None => Ok(Err(Error::Os(format!(
            "netlink did not answer within {} s",
            NET_TIMEOUT.as_secs()
        )))),
    }
}

impl Host for Ctx {
    async fn list_links(&mut self) -> wasmtime::Result<Result<Vec<Link>, Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Read,
            |net| async move { net.list_links().await },
        )
        .await
    }

    async fn get_link(&mut self, name: String) -> wasmtime::Result<Result<Link, Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Read,
            |net| async move { net.get_link(&name).await },
        )
        .await
    }

    async fn list_neighbours(
        &mut self,
        link: Option<String>,
    ) -> wasmtime::Result<Result<Vec<Neighbour>, Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Read,
            |net| async move { net.list_neighbours(link.as_deref()).await },
        )
        .await
    }

    async fn set_link_up(&mut self, name: String, up: bool) -> wasmtime::Result<Result<(), Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Write,
            |net| async move { net.set_link_up(&name, up).await },
        )
        .await
    }

    async fn add_address(
        &mut self,
        link: String,
        address: Address,
    ) -> wasmtime::Result<Result<(), Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Write,
            |net| async move { net.add_address(&link, &address).await },
        )
        .await
    }

    async fn remove_address(
        &mut self,
        link: String,
        address: Address,
    ) -> wasmtime::Result<Result<(), Error>> {
        call(
            &self.plugin,
            self.deadline,
            Access::Write,
            |net| async move { net.remove_address(&link, &address).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grants;
    use crate::runtime::{test_ctx, test_shared};
    use crate::util::deadline::DeadlineExceeded;

    #[test]
    fn globs_match_whole_names_with_star_and_question_mark() {
        for (pattern, name, expected) in [
            ("guest*", "guest0", true),
            ("guest*", "guest", true),
            ("guest*", "guest-wifi", true),
            ("guest*", "aguest0", false),
            ("guest?", "guest0", true),
            ("guest?", "guest10", false),
            ("guest?", "guest", false),
            ("*", "", true),
            ("*", "eth0", true),
            ("eth0", "eth0", true),
            ("eth0", "eth01", false),
            ("eth0", "eth", false),
            ("*0", "guest0", true),
            ("*0", "guest1", false),
            ("g*t*0", "guest0", true),
            ("g*t*0", "gust1", false),
            ("*.*", "eth0.100", true),
            ("*.*", "eth0", false),
            ("br-*-?", "br-lan-1", true),
            ("br-*-?", "br-lan-12", false),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ] {
            assert_eq!(
                glob_match(pattern, name),
                expected,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn link_names_the_kernel_cannot_have_are_recognised() {
        assert!(valid_link_name("guest0"));
        assert!(valid_link_name("a23456789012345"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a234567890123456"] {
            assert!(!valid_link_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_checked_before_the_kernel_sees_them() {
        let a = |address: &str, prefix_len| Address {
            address: address.into(),
            prefix_len,
        };
        assert_eq!(
            parse_address(&a("10.9.0.1", 24)).unwrap().to_string(),
            "10.9.0.1"
        );
        assert_eq!(
            parse_address(&a("2001:db8::1", 128)).unwrap().to_string(),
            "2001:db8::1"
        );
        for (bad, needle) in [
            (a("10.9.0.256", 24), "not an IPv4 or IPv6"),
            (a("10.9.0.1/24", 24), "not an IPv4 or IPv6"),
            (a("10.9.0.1", 33), "over 32"),
            (a("2001:db8::1", 129), "over 128"),
            (a("224.0.0.1", 4), "cannot be assigned"),
            (a("0.0.0.0", 0), "cannot be assigned"),
        ] {
            match parse_address(&bad) {
                Err(Error::Invalid(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn without_the_grant_every_call_is_denied() {
        let host = test_shared();
        let mut ctx = test_ctx(&host, "a", Grants::default());
        assert!(matches!(
            Host::list_links(&mut ctx).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            Host::get_link(&mut ctx, "lo".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            Host::list_neighbours(&mut ctx, None).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            Host::set_link_up(&mut ctx, "lo".into(), true)
                .await
                .unwrap(),
            Err(Error::Denied(_))
        ));
    }

    #[tokio::test]
    async fn a_read_only_grant_refuses_changes_before_any_netlink_call() {
        let host = test_shared();
        let grants = Grants {
            net: Some(NetGrant {
                links: vec!["*".into()],
                write: false,
                // A namespace that does not exist: the refusal must come first.
                netns: Some("/nonexistent/wasmgate-test-netns".into()),
            }),
            ..Grants::default()
        };
        let mut ctx = test_ctx(&host, "a", grants);
        let addr = Address {
            address: "10.0.0.1".into(),
            prefix_len: 24,
        };
        for r in [
            Host::set_link_up(&mut ctx, "lo".into(), false)
                .await
                .unwrap(),
            Host::add_address(&mut ctx, "lo".into(), addr.clone())
                .await
                .unwrap(),
            Host::remove_address(&mut ctx, "lo".into(), addr)
                .await
                .unwrap(),
        ] {
            match r {
                Err(Error::Denied(m)) => assert!(m.contains("net.write"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        // Reads reach the namespace, which is missing: an `os` error naming it.
        match Host::list_links(&mut ctx).await.unwrap() {
            Err(Error::Os(m)) => assert!(m.contains("/nonexistent/wasmgate-test-netns"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_past_the_request_deadline_traps_as_a_deadline() {
        let host = test_shared();
        let grants = Grants {
            net: Some(NetGrant {
                links: vec!["lo".into()],
                write: false,
                netns: None,
            }),
            ..Grants::default()
        };
        let mut ctx = test_ctx(&host, "a", grants);
        ctx.deadline = Instant::now();
        let trap = Host::list_links(&mut ctx)
            .await
            .expect_err("a trap, not an answer");
        assert!(
            trap.downcast_ref::<DeadlineExceeded>().is_some(),
            "{trap:?}"
        );
    }

    #[tokio::test]
    async fn the_host_namespace_shows_only_matching_links() {
        // Every Linux namespace has `lo`; reading it needs no privilege.
        let host = test_shared();
        let grant = |links: &[&str]| Grants {
            net: Some(NetGrant {
                links: links.iter().map(|s| s.to_string()).collect(),
                write: false,
                netns: None,
            }),
            ..Grants::default()
        };
        let mut ctx = test_ctx(&host, "a", grant(&["l?"]));
        let links = Host::list_links(&mut ctx).await.unwrap().unwrap();
        assert!(links.iter().all(|l| glob_match("l?", &l.name)), "{links:?}");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo is listed");
        assert!(
            lo.addresses
                .iter()
                .any(|a| a.address == "127.0.0.1" && a.prefix_len == 8),
            "{lo:?}"
        );
        assert_eq!(
            Host::get_link(&mut ctx, "lo".into())
                .await
                .unwrap()
                .unwrap()
                .index,
            lo.index
        );
        match Host::get_link(&mut ctx, "lx".into()).await.unwrap() {
            Err(Error::NotFound(m)) => assert!(m.contains("`lx`"), "{m}"),
            other => panic!("{other:?}"),
        }

        let mut other = test_ctx(&host, "b", grant(&["eth*"]));
        match Host::get_link(&mut other, "lo".into()).await.unwrap() {
            Err(Error::Denied(m)) => assert_eq!(m, "link `lo` is outside the grant"),
            r => panic!("{r:?}"),
        }
        match Host::list_neighbours(&mut other, Some("lo".into()))
            .await
            .unwrap()
        {
            Err(Error::Denied(m)) => assert_eq!(m, "link `lo` is outside the grant"),
            r => panic!("{r:?}"),
        }
        let links = Host::list_links(&mut other).await.unwrap().unwrap();
        assert!(links.iter().all(|l| l.name.starts_with("eth")), "{links:?}");
    }
}
