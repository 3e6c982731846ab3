//! The data-plane threads' lifecycle: the stop request, and the failure signal raised
//! when a thread ends without being asked to (an error, a panic, or a plain return).
//!
//! Every data-plane thread runs through [`Lifecycle::spawn`], which watches its body:
//! once a thread is gone the data plane is broken, so the first such exit is published
//! as `"<thread name>: <why>"` on a [`tokio::sync::watch`] channel and
//! [`Lifecycle::running`] turns false. Exits after [`Lifecycle::stop`] are the
//! expected shutdown and signal nothing.

use std::any::Any;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;

/// The stop flag and the failure signal shared by the data plane's threads.
#[derive(Debug)]
pub(super) struct Lifecycle {
    stop: AtomicBool,
    /// The process is exiting for a restart: threads keep forwarding until it ends,
    /// and one that ends meanwhile (its device removed) is no failure.
    exiting: AtomicBool,
    failure: watch::Sender<Option<String>>,
    /// An eventfd that turns readable on [`Self::stop`], so threads can wait on their
    /// descriptors without a timeout (`None` if the kernel refused one: they then wake
    /// periodically to look at the flag).
    stop_event: Option<OwnedFd>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        // SAFETY: a new descriptor that nothing else owns.
        let stop_event = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        Self {
            stop: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            failure: watch::Sender::new(None),
            stop_event,
        }
    }
}

impl Lifecycle {
    /// Asks the threads to finish.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(fd) = &self.stop_event {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to an eventfd. It fails only
            // if the counter would overflow, and then it is readable already.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The descriptor that turns readable (and stays so) once [`Self::stop`] is
    /// called, if there is one.
    pub(super) fn stop_fd(&self) -> Option<RawFd> {
        self.stop_event.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The process is about to exit (a restart): thread exits are no longer failures.
    pub(super) fn exiting(&self) {
        self.exiting.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::stop`] was called.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Neither asked to stop nor failed.
    pub(super) fn running(&self) -> bool {
        !self.stopping() && self.failure.borrow().is_none()
    }

    /// The failure signal: `None` while every thread runs (or after a clean stop),
    /// then `Some("<thread name>: <why>")` for the first thread that ended on its own.
    pub(super) fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// Records the failure of `thread`, unless one is already recorded.
    fn fail(&self, thread: &str, why: &str) {
        self.failure.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(format!("{thread}: {why}"));
            true
        });
    }

    /// Runs `body` on a thread named `name`. If it returns an error, panics or returns
    /// at all while no stop was asked for, the failure is logged and signalled.
    pub(super) fn spawn<F>(self: &Arc<Self>, name: &str, body: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() -> anyhow::Result<()> + Send + 'static,
    {
        let me = Arc::clone(self);
        let thread = name.to_string();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let why = match catch_unwind(AssertUnwindSafe(body)) {
                    Ok(Ok(())) => "exited without being asked to stop".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
                };
                if me.stopping() || me.exiting.load(Ordering::Relaxed) {
                    tracing::debug!(thread, why, "data-plane thread ended while stopping");
                    return;
                }
                tracing::error!(thread, error = %why, "a data-plane thread died");
                me.fail(&thread, &why);
            })
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    fn run(life: &Arc<Lifecycle>, name: &str, body: fn() -> anyhow::Result<()>) {
        life.spawn(name, body)
            .expect("spawn")
            .join()
            .expect("the watcher itself never panics");
    }

    #[test]
    fn an_error_is_signalled_once_and_stops_running() {
        let life = Arc::new(Lifecycle::default());
        let mut rx = life.failure();
        assert!(life.running());
        assert_eq!(*rx.borrow(), None);
        run(&life, "weft-udp", || {
            Err(anyhow!("Bad file descriptor").context("polling the UDP socket"))
        });
        assert!(rx.has_changed().expect("sender alive"));
        assert_eq!(
            rx.borrow_and_update().as_deref(),
            Some("weft-udp: polling the UDP socket: Bad file descriptor")
        );
        assert!(!life.running());
        // A later failure keeps the first reason and does not wake the receiver.
        run(&life, "weft-tun", || Err(anyhow!("gone")));
        assert!(!rx.has_changed().expect("sender alive"));
        assert_eq!(
            rx.borrow().as_deref(),
            Some("weft-udp: polling the UDP socket: Bad file descriptor")
        );
    }

    #[test]
    fn a_panic_or_an_unasked_return_is_a_failure() {
        let life = Arc::new(Lifecycle::default());
        run(&life, "weft-timers", || panic!("boom"));
        assert_eq!(
            life.failure().borrow().as_deref(),
            Some("weft-timers: panicked: boom")
        );
        assert!(!life.running());

        let life = Arc::new(Lifecycle::default());
        run(&life, "weft-l2", || Ok(()));
        assert_eq!(
            life.failure().borrow().as_deref(),
            Some("weft-l2: exited without being asked to stop")
        );
    }

    #[test]
    fn exits_after_stop_signal_nothing() {
        let life = Arc::new(Lifecycle::default());
        let rx = life.failure();
        life.stop();
        run(&life, "weft-tun", || Ok(()));
        run(&life, "weft-udp", || Err(anyhow!("socket closed")));
        run(&life, "weft-l2", || panic!("late"));
        assert_eq!(*rx.borrow(), None);
        assert!(!rx.has_changed().expect("sender alive"));
        assert!(!life.running());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_up() {
        let life = Arc::new(Lifecycle::default());
        let mut rx = life.failure();
        let handle = life
            .spawn("weft-tun", || Err(anyhow!("reading the TUN device: EIO")))
            .expect("spawn");
        let why = rx
            .wait_for(Option::is_some)
            .await
            .expect("sender alive")
            .clone();
        assert_eq!(
            why.as_deref(),
            Some("weft-tun: reading the TUN device: EIO")
        );
        handle.join().expect("joins");
    }
}
