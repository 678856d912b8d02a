//! Netlink on links, for `net` and for `wireguard` (which makes and
//! configures its devices' links): one connection per network namespace,
//! and the few link operations both capabilities need.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::sys::{TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkUnspec};

use crate::caps::wit::net::Error;

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
    pub async fn handle(&self, netns: Option<&Path>) -> Result<Handle, Error> {
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
    pub fn forget(&self, netns: Option<&Path>) {
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
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

pub fn os(e: rtnetlink::Error) -> Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => Error::Os(m.to_io().to_string()),
        other => Error::Os(format!("netlink: {other}")),
    }
}

/// The link whose own name is `name`, if there is one. The kernel also finds
/// a link by an alternative name (`ip link property add ... altname`), which
/// a grant's patterns did not see: only the link's own name counts.
pub async fn find_link(
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
pub async fn set_up_by_index(
    handle: &Handle,
    index: u32,
    up: bool,
) -> Result<(), rtnetlink::Error> {
    let builder = LinkUnspec::new_with_index(index);
    let message = if up { builder.up() } else { builder.down() }.build();
    handle.link().set(message).execute().await
}

pub fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}
