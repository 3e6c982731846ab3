//! The one netlink layer of weftnet, used by the daemon and by the CNI plugin: the
//! connection to the kernel's routing socket ([`Netlink`]), interface lookup, and the
//! mapping of the kernel's errno answers to one-line messages ([`Error`]) and to
//! "already there" / "already gone" for idempotent requests. What is done to links,
//! addresses and routes lives in `link`, `addr` and `route`. Nothing else in weftnet
//! changes kernel network state (but the forwarding sysctls and the TUN/TAP ioctls).

mod addr;
mod link;
mod route;
mod rule;

use anyhow::{anyhow, Result};
use futures::{TryStream, TryStreamExt};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::Handle;
use std::fmt;

/// A connection to the kernel's routing socket, in the network namespace of the
/// thread that opened it.
pub(crate) struct Netlink {
    handle: Handle,
}

/// What weftnet needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    /// The link-layer address; empty if the interface has none (a TUN).
    pub(crate) mac: Vec<u8>,
    /// The bridge (or other controller) the interface is a port of.
    pub(crate) controller: Option<u32>,
    /// Whether the interface is a Linux bridge.
    pub(crate) is_bridge: bool,
}

/// A request the kernel refused: what was attempted, in words, and its answer. Shown
/// as "cannot add address 10.0.0.1/24: File exists (os error 17)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    what: String,
    errno: Option<i32>,
    /// The failure as the netlink library reported it (for logs and CNI details).
    detail: String,
}

impl Error {
    /// The failure of `what` with the netlink library's error.
    fn new(what: impl Into<String>, cause: &rtnetlink::Error) -> Self {
        Self {
            what: what.into(),
            errno: errno(cause),
            detail: cause.to_string(),
        }
    }

    /// The failure of `what` with an OS error (opening the socket).
    fn io(what: impl Into<String>, cause: &std::io::Error) -> Self {
        Self {
            what: what.into(),
            errno: cause.raw_os_error(),
            detail: cause.to_string(),
        }
    }

    /// The kernel's errno, if it answered with one.
    pub(crate) fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The failure as the netlink library reported it, unprocessed.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(n) => write!(f, "{}: {}", self.what, std::io::Error::from_raw_os_error(n)),
            None => write!(f, "{}: {}", self.what, self.detail),
        }
    }
}

// No `source()`: the message already carries the cause, and `{:#}` would repeat it.
impl std::error::Error for Error {}

/// The errno of a request the kernel refused.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Whether the kernel refused because the thing to add is already there.
fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}

/// Whether the kernel refused because the thing to remove or find is not there: no
/// such interface (ENODEV) or no such route (ESRCH).
fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(libc::ENODEV | libc::ESRCH))
}

/// The outcome of an idempotent create: whether it made something; "already exists"
/// is `Ok(false)`.
fn created(r: Result<(), rtnetlink::Error>) -> Result<bool, rtnetlink::Error> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_exists(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The outcome of an idempotent removal: whether it removed something; "already
/// gone" is `Ok(false)`.
fn removed(r: Result<(), rtnetlink::Error>) -> Result<bool, rtnetlink::Error> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// For `map_err`: the failure of `what`, as an [`Error`] in an `anyhow::Error`.
fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> anyhow::Error {
    let what = what.into();
    move |e| Error::new(what, &e).into()
}

/// Whether `e` is the kernel saying that what was to be created already exists.
pub(crate) fn already_exists(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Error>()
        .is_some_and(|e| e.errno() == Some(libc::EEXIST))
}

impl Netlink {
    /// Opens the connection; must be called inside a tokio runtime.
    pub(crate) fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("cannot open a netlink socket", &e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The interface called `name`; `None` if there is none.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        first_link(found, name).await
    }

    /// The interface with index `index`; `None` if there is none.
    pub(crate) async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let found = self.handle.link().get().match_index(index).execute();
        first_link(found, index).await
    }

    /// The index of interface `name` and whether it is a Linux bridge; `None` if there
    /// is no such interface.
    pub(crate) async fn find_link(&self, name: &str) -> Result<Option<(u32, bool)>> {
        Ok(self.link(name).await?.map(|l| (l.index, l.is_bridge)))
    }

    /// The index of interface `name`, which must exist.
    pub(crate) async fn link_index(&self, name: &str) -> Result<u32> {
        self.link(name)
            .await?
            .map(|link| link.index)
            .ok_or_else(|| anyhow!("interface {name} disappeared"))
    }
}

/// The first link of a lookup's answer; no such interface is `None`.
async fn first_link(
    mut found: impl TryStream<Ok = LinkMessage, Error = rtnetlink::Error> + Unpin,
    label: impl fmt::Display,
) -> Result<Option<Link>> {
    match found.try_next().await {
        Ok(Some(msg)) => Ok(Some(parse_link(msg))),
        Ok(None) => Ok(None),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(failed(format!("cannot look up interface {label}"))(e)),
    }
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        mac: Vec::new(),
        controller: None,
        is_bridge: false,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Controller(c) => link.controller = Some(c),
            LinkAttribute::LinkInfo(infos) => {
                link.is_bridge |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    fn refused(errno: i32) -> rtnetlink::Error {
        let mut m = ErrorMessage::default();
        m.code = NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(m)
    }

    #[test]
    fn kernel_refusals_read_as_the_errno() {
        let e = Error::new("cannot add address 10.0.0.1/24", &refused(libc::EEXIST));
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(
            e.to_string(),
            format!(
                "cannot add address 10.0.0.1/24: {}",
                std::io::Error::from_raw_os_error(libc::EEXIST)
            )
        );
        assert!(e.detail().contains("netlink error"), "{}", e.detail());
        // Through anyhow, as callers see it, with or without the chain.
        let a: anyhow::Error = e.clone().into();
        assert_eq!(format!("{a}"), e.to_string());
        assert_eq!(format!("{a:#}"), e.to_string());
        assert!(already_exists(&a));
    }

    #[test]
    fn other_failures_keep_the_library_message() {
        let e = Error::new("cannot list addresses", &rtnetlink::Error::RequestFailed);
        assert_eq!(e.errno(), None);
        assert_eq!(
            e.to_string(),
            "cannot list addresses: A netlink request failed"
        );
        assert!(!already_exists(&e.into()));
        assert!(!already_exists(&anyhow!("interface x disappeared")));
    }

    #[test]
    fn socket_failures_read_as_the_os_error() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = Error::io("cannot open a netlink socket", &io);
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert_eq!(e.to_string(), format!("cannot open a netlink socket: {io}"));
    }

    #[test]
    fn idempotence_classes() {
        assert!(is_exists(&refused(libc::EEXIST)));
        assert!(!is_exists(&refused(libc::ENODEV)));
        assert!(is_gone(&refused(libc::ENODEV)));
        assert!(is_gone(&refused(libc::ESRCH)));
        assert!(!is_gone(&refused(libc::EPERM)));
        assert!(!is_gone(&rtnetlink::Error::RequestFailed));
        assert_eq!(created(Ok(())), Ok(true));
        assert_eq!(created(Err(refused(libc::EEXIST))), Ok(false));
        assert_eq!(
            created(Err(refused(libc::ENODEV))),
            Err(refused(libc::ENODEV))
        );
        assert_eq!(removed(Ok(())), Ok(true));
        assert_eq!(removed(Err(refused(libc::ESRCH))), Ok(false));
        assert_eq!(removed(Err(refused(libc::ENODEV))), Ok(false));
        assert_eq!(
            removed(Err(refused(libc::EEXIST))),
            Err(refused(libc::EEXIST))
        );
    }

    #[test]
    fn link_attributes() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.attributes = vec![
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        assert_eq!(
            parse_link(msg),
            Link {
                index: 7,
                mac: vec![2, 0, 0, 0, 0, 1],
                controller: Some(3),
                is_bridge: true,
            }
        );
        let mut tun = LinkMessage::default();
        tun.header.index = 9;
        let link = parse_link(tun);
        assert!(link.mac.is_empty() && link.controller.is_none() && !link.is_bridge);
    }
}
