//! Where the plugin's netlink work runs: on the host, or inside a pod's network
//! namespace. Work in a pod's namespace runs on a dedicated thread that joins the
//! namespace with setns(CLONE_NEWNET) and opens its own netlink connection (a netlink
//! socket belongs to the namespace of the thread that created it); the calling thread
//! never changes namespace. The netlink requests themselves are `crate::netlink`'s.

use super::error::{code, CniError, Result};
use crate::netlink::Netlink;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;

/// Runs `work` with a fresh netlink connection in the calling thread's namespace.
pub(crate) fn on_host<T, F, Fut>(work: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::NETLINK, format!("cannot start the I/O runtime: {e}")))?;
    runtime.block_on(async { work(Netlink::connect()?).await })
}

/// Runs `work` inside the network namespace `netns` on a dedicated thread.
pub(crate) fn in_netns<T, F, Fut>(netns: &File, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: setns on a descriptor we hold open; it changes only this thread's
            // network namespace, and the thread ends with the work.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("cannot enter the network namespace in CNI_NETNS: {e}: pass the path of the pod's network namespace"),
                ));
            }
            on_host(work)
        });
        thread.join().unwrap_or_else(|_| {
            Err(CniError::new(
                code::NETLINK,
                "the network namespace worker thread panicked",
            ))
        })
    })
}
