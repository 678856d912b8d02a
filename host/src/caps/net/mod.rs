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
//! The host functions are async (see `caps/wit.rs`): the call runs on the
//! request's fibre, which yields to tokio while netlink answers, so no
//! executor thread blocks and the epoch deadline keeps working.
//!
//! A netlink socket belongs for its whole life to the network namespace of
//! the thread that created it. For a grant naming a namespace, a short-lived
//! OS thread enters it with `setns`, creates the socket and ends; the socket
//! then serves from any thread. No thread of tokio's ever changes namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourState as KernelNeighbourState,
};
use wasmtime::component::{HasData, Linker};

use super::wit::net::{Address, Error, Host, Link, Neighbour, NeighbourState, OperState};
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv, Trappable};

pub mod grant;
pub mod links;

pub use grant::NetGrant;
use grant::{glob_match, valid_link_name};
pub use links::Connections;
use links::{errno, find_link, link_name, os, set_up_by_index};

type NetError = Trappable<Error>;

pub struct Net;

impl Capability for Net {
    const NAME: &'static str = "net";
    const EXAMPLE: &'static str = "{ links: [\"guest*\"] }";
    type Grant = Option<NetGrant>;
    /// One netlink connection per namespace, shared by every plugin.
    type State = Connections;
    type PluginState = ();

    fn validate(grant: &Option<NetGrant>) -> Result<(), (String, String)> {
        grant.as_ref().map_or(Ok(()), NetGrant::validate)
    }

    fn state(_: &HostEnv) -> Connections {
        Connections::default()
    }

    fn plugin_state(_: &PluginEnv<'_>, _: &Option<NetGrant>) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::net::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's grant, the connections, the deadline.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    connections: &'a Connections,
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
            connections: &call.host.net,
            deadline: call.deadline,
        }
    }
}

/// The longest a netlink call may take: the kernel answers in microseconds,
/// and the request's own deadline is not checked while the host awaits.
pub const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a refused link name an error message repeats.
const MAX_NAME_IN_MESSAGE: usize = 64;

/// A name as repeated in an error message: bounded.
fn shown(name: &str) -> String {
    crate::util::text::shown(name, MAX_NAME_IN_MESSAGE)
}

fn no_link(name: &str) -> Error {
    Error::NotFound(format!("no link `{}`", shown(name)))
}

/// One call's view of the capability: the grant, re-checked, and the
/// connection of its namespace.
struct NetCall<'a> {
    grant: &'a NetGrant,
    connections: &'a Connections,
    netns: Option<PathBuf>,
    handle: Handle,
}

/// Whether the call only reads or also changes something.
#[derive(PartialEq)]
enum Access {
    Read,
    Write,
}

impl<'a> NetCall<'a> {
    async fn open(
        grant: &'a NetGrant,
        connections: &'a Connections,
        access: Access,
    ) -> Result<NetCall<'a>, Error> {
        if access == Access::Write && !grant.write {
            return Err(Error::Denied(
                "the grant does not allow changes (`net.write` is false)".into(),
            ));
        }
        let netns = grant.netns_path();
        let handle = connections.handle(netns.as_deref()).await?;
        Ok(NetCall {
            grant,
            connections,
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
            self.connections.forget(self.netns.as_deref());
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
async fn call<'a, T, F, Fut>(view: &View<'a>, access: Access, f: F) -> Result<T, NetError>
where
    F: FnOnce(NetCall<'a>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let Some(grant) = view.plugin.grants.net.as_ref() else {
        return Err(Trappable::trap(view.plugin.not_granted(Net::NAME)));
    };
    let connections = view.connections;
    let work = async {
        let net = NetCall::open(grant, connections, access).await?;
        f(net).await
    };
    match crate::util::deadline::bound(view.deadline, NET_TIMEOUT, work)
        .await
        .map_err(Trappable::trap)?
    {
        Some(r) => Ok(r?),
        None => Err(Error::Os(format!(
            "netlink did not answer within {} s",
            NET_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

impl Host for View<'_> {
    fn convert_error(&mut self, err: NetError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    async fn list_links(&mut self) -> Result<Vec<Link>, NetError> {
        call(
            self,
            Access::Read,
            |net| async move { net.list_links().await },
        )
        .await
    }

    async fn get_link(&mut self, name: String) -> Result<Link, NetError> {
        call(self, Access::Read, |net| async move {
            net.get_link(&name).await
        })
        .await
    }

    async fn list_neighbours(&mut self, link: Option<String>) -> Result<Vec<Neighbour>, NetError> {
        call(self, Access::Read, |net| async move {
            net.list_neighbours(link.as_deref()).await
        })
        .await
    }

    async fn set_link_up(&mut self, name: String, up: bool) -> Result<(), NetError> {
        call(self, Access::Write, |net| async move {
            net.set_link_up(&name, up).await
        })
        .await
    }

    async fn add_address(&mut self, link: String, address: Address) -> Result<(), NetError> {
        call(self, Access::Write, |net| async move {
            net.add_address(&link, &address).await
        })
        .await
    }

    async fn remove_address(&mut self, link: String, address: Address) -> Result<(), NetError> {
        call(self, Access::Write, |net| async move {
            net.remove_address(&link, &address).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;
    use crate::util::deadline::DeadlineExceeded;

    /// The interface as a plugin sees it: each call through a fresh view,
    /// its error as the WIT error (or a trap).
    struct P(Fixture);

    fn wit<T>(r: Result<T, NetError>) -> wasmtime::Result<Result<T, Error>> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) => e.into_wit().map(Err),
        }
    }

    impl P {
        async fn list_links(&mut self) -> wasmtime::Result<Result<Vec<Link>, Error>> {
            wit(Host::list_links(&mut View::new(self.0.call())).await)
        }
        async fn get_link(&mut self, n: String) -> wasmtime::Result<Result<Link, Error>> {
            wit(Host::get_link(&mut View::new(self.0.call()), n).await)
        }
        async fn list_neighbours(
            &mut self,
            l: Option<String>,
        ) -> wasmtime::Result<Result<Vec<Neighbour>, Error>> {
            wit(Host::list_neighbours(&mut View::new(self.0.call()), l).await)
        }
        async fn set_link_up(
            &mut self,
            n: String,
            up: bool,
        ) -> wasmtime::Result<Result<(), Error>> {
            wit(Host::set_link_up(&mut View::new(self.0.call()), n, up).await)
        }
        async fn add_address(
            &mut self,
            n: String,
            a: Address,
        ) -> wasmtime::Result<Result<(), Error>> {
            wit(Host::add_address(&mut View::new(self.0.call()), n, a).await)
        }
        async fn remove_address(
            &mut self,
            n: String,
            a: Address,
        ) -> wasmtime::Result<Result<(), Error>> {
            wit(Host::remove_address(&mut View::new(self.0.call()), n, a).await)
        }
    }

    fn plugin(host: &std::sync::Arc<crate::caps::HostCaps>, name: &str, grants: Grants) -> P {
        P(Fixture::on(host, name, grants))
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
    async fn without_the_grant_every_call_traps() {
        let host = Fixture::host();
        let mut ctx = plugin(&host, "a", Grants::default());
        assert!(ctx.list_links().await.is_err());
        assert!(ctx.get_link("lo".into()).await.is_err());
        assert!(ctx.list_neighbours(None).await.is_err());
        assert!(ctx.set_link_up("lo".into(), true).await.is_err());
    }

    #[tokio::test]
    async fn a_read_only_grant_refuses_changes_before_any_netlink_call() {
        let host = Fixture::host();
        let grants = Grants {
            net: Some(NetGrant {
                links: vec!["*".into()],
                write: false,
                // A namespace that does not exist: the refusal must come first.
                netns: Some("/nonexistent/wasmgate-test-netns".into()),
            }),
            ..Grants::default()
        };
        let mut ctx = plugin(&host, "a", grants);
        let addr = Address {
            address: "10.0.0.1".into(),
            prefix_len: 24,
        };
        for r in [
            ctx.set_link_up("lo".into(), false).await.unwrap(),
            ctx.add_address("lo".into(), addr.clone()).await.unwrap(),
            ctx.remove_address("lo".into(), addr).await.unwrap(),
        ] {
            match r {
                Err(Error::Denied(m)) => assert!(m.contains("net.write"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        // Reads reach the namespace, which is missing: an `os` error naming it.
        match ctx.list_links().await.unwrap() {
            Err(Error::Os(m)) => assert!(m.contains("/nonexistent/wasmgate-test-netns"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_past_the_request_deadline_traps_as_a_deadline() {
        let host = Fixture::host();
        let grants = Grants {
            net: Some(NetGrant {
                links: vec!["lo".into()],
                write: false,
                netns: None,
            }),
            ..Grants::default()
        };
        let mut ctx = plugin(&host, "a", grants);
        ctx.0.deadline = Instant::now();
        let trap = ctx.list_links().await.expect_err("a trap, not an answer");
        assert!(
            trap.downcast_ref::<DeadlineExceeded>().is_some(),
            "{trap:?}"
        );
    }

    #[tokio::test]
    async fn the_host_namespace_shows_only_matching_links() {
        // Every Linux namespace has `lo`; reading it needs no privilege.
        let host = Fixture::host();
        let grant = |links: &[&str]| Grants {
            net: Some(NetGrant {
                links: links.iter().map(|s| s.to_string()).collect(),
                write: false,
                netns: None,
            }),
            ..Grants::default()
        };
        let mut ctx = plugin(&host, "a", grant(&["l?"]));
        let links = ctx.list_links().await.unwrap().unwrap();
        assert!(links.iter().all(|l| glob_match("l?", &l.name)), "{links:?}");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo is listed");
        assert!(
            lo.addresses
                .iter()
                .any(|a| a.address == "127.0.0.1" && a.prefix_len == 8),
            "{lo:?}"
        );
        assert_eq!(
            ctx.get_link("lo".into()).await.unwrap().unwrap().index,
            lo.index
        );
        match ctx.get_link("lx".into()).await.unwrap() {
            Err(Error::NotFound(m)) => assert!(m.contains("`lx`"), "{m}"),
            other => panic!("{other:?}"),
        }

        let mut other = plugin(&host, "b", grant(&["eth*"]));
        match other.get_link("lo".into()).await.unwrap() {
            Err(Error::Denied(m)) => assert_eq!(m, "link `lo` is outside the grant"),
            r => panic!("{r:?}"),
        }
        match other.list_neighbours(Some("lo".into())).await.unwrap() {
            Err(Error::Denied(m)) => assert_eq!(m, "link `lo` is outside the grant"),
            r => panic!("{r:?}"),
        }
        let links = other.list_links().await.unwrap().unwrap();
        assert!(links.iter().all(|l| l.name.starts_with("eth")), "{links:?}");
    }
}
