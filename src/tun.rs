//! The TUN device: opening `/dev/net/tun`, attaching an interface by name, and
//! reading/writing whole IP packets (a TUN) or Ethernet frames (a TAP, bridge mode's
//! L2 port). The overlay TUN is persistent (`TUNSETPERSIST`): it outlives the process,
//! so a restarted daemon attaches to it by name with its addresses and routes in place
//! ([`Tun::attach_or_create`], [`Tun::set_persist`]). This is the only module with TUN
//! ioctls.
//!
//! The overlay TUN is opened with the kernel's offloads where it has them
//! (`IFF_VNET_HDR` and `TUNSETOFFLOAD` with checksum and TCP segmentation offload):
//! every read and write then starts with a virtio-net header and may carry a TCP
//! super-packet of up to 64 KiB (see `weftnet_proto::offload`). The functions for that
//! are together at the end of this file.
//!
//! The overlay TUN is multi-queue (`IFF_MULTI_QUEUE`): one descriptor per queue, each
//! worker reading several; the kernel steers each flow to one queue
//! ([`Tun::attach_or_create`]).

use anyhow::{anyhow, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// `_IOW('T', 202, int)`; the request argument is `c_ulong` on glibc and `c_int` on
/// musl (`libc::Ioctl`), and the value fits both.
const TUNSETIFF: libc::Ioctl = 0x4004_54ca;
/// `_IOW('T', 203, int)`: the argument is the flag itself (non-zero: persistent).
const TUNSETPERSIST: libc::Ioctl = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::Ioctl = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN (or TAP) interface. Closing it (dropping) removes the interface,
/// unless it was made persistent ([`Tun::set_persist`]).
pub(crate) struct Tun {
    file: File,
    name: String,
    /// Which offloads are on (every read and write carries a virtio-net header unless
    /// this is [`Offload::Off`]).
    offload: Offload,
    /// One queue of a multi-queue device (`IFF_MULTI_QUEUE`).
    multi_queue: bool,
}

impl Tun {
    /// Attaches to the TUN interface `name` that an earlier run left (persistent), or
    /// creates it, with `queues` queues; then makes it persistent. Returns one device
    /// per queue (at least one). `existed` is the caller's check, made before, that a
    /// link of that name exists.
    ///
    /// More than one queue needs a multi-queue device. An existing single-queue device
    /// (left by a weftnet before multi-queue, or made with `ip tuntap`) is attached with
    /// one queue rather than recreated, so that its addresses and routes, and the
    /// traffic on them, survive the restart; remove it (`ip link del`) while weftnet is
    /// stopped to get every queue. Likewise one queue attaches to an existing
    /// multi-queue device as one queue of it.
    pub(crate) fn attach_or_create(name: &str, existed: bool, queues: usize) -> Result<Vec<Self>> {
        // A multi-queue device takes any number of attachers: refuse one that another
        // process reads (the kernel turns the carrier on while a queue is attached), as
        // the kernel refuses a second reader of a single-queue one.
        if existed && has_carrier(name) {
            return Err(attach_error(
                name,
                &anyhow!("its carrier is on: another process has it open"),
            ));
        }
        let multi = queues > 1;
        let first = match Self::create_offloaded(name, multi) {
            Ok(t) => t,
            Err(e) if existed => match Self::create_offloaded(name, !multi) {
                Ok(t) => {
                    tracing::info!(
                        interface = name,
                        multi_queue = !multi,
                        "attached to the existing interface in its own queue mode"
                    );
                    t
                }
                Err(_) => return Err(attach_error(name, &e)),
            },
            Err(e) => return Err(e),
        };
        first.set_persist(true)?;
        let mut all = vec![first];
        if all[0].multi_queue && multi {
            for _ in 1..queues {
                let q = all[0].another_queue()?;
                all.push(q);
            }
        } else if multi {
            tracing::warn!(
                interface = name,
                "interface {name} is a single-queue TUN left by an earlier run: running with 1 worker on 1 queue; stop weftnet and remove it (ip link del {name}) to get {queues} queues"
            );
        }
        Ok(all)
    }

    /// Another queue of this multi-queue device, with the same header and offloads.
    fn another_queue(&self) -> Result<Self> {
        let mut q = Self::open(&self.name, false, self.offload != Offload::Off, true)?;
        if self.offload == Offload::Tso {
            q.offload = if set_offload(q.fd()).is_ok() {
                Offload::Tso
            } else {
                return Err(anyhow!(
                    "interface {}: a new queue refused the offloads the first one has; set WEFTNET_TUN_OFFLOAD=off",
                    self.name
                ));
            };
        }
        Ok(q)
    }

    /// Whether this is one queue of a multi-queue device.
    pub(crate) fn multi_queue(&self) -> bool {
        self.multi_queue
    }

    /// Makes the interface outlive this process (`true`: a restarted daemon attaches
    /// to it) or go away when its last descriptor closes (`false`).
    pub(crate) fn set_persist(&self, persist: bool) -> Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value (an int flag); the fd is a
        // valid /dev/net/tun descriptor attached to an interface.
        let rc = unsafe {
            libc::ioctl(
                self.fd(),
                TUNSETPERSIST,
                libc::c_ulong::from(persist) as *mut libc::c_void,
            )
        };
        if rc < 0 {
            return Err(anyhow!(
                "cannot make interface {} {}persistent: {}",
                self.name,
                if persist { "" } else { "non-" },
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Creates the TAP interface `name`, bridge mode's L2 port (which must not exist
    /// yet): reads and writes whole Ethernet frames.
    pub(crate) fn create_tap(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(anyhow!(
                "invalid L2 port name {name:?}: use a shorter --interface (at most 12 characters)"
            ));
        }
        Self::open(name, true, false, false)
    }

    fn open(name: &str, tap: bool, vnet: bool, multi_queue: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => anyhow!(
                    "/dev/net/tun is missing: load the tun module (modprobe tun), or in a container mount the device (--device /dev/net/tun)"
                ),
                io::ErrorKind::PermissionDenied => anyhow!(
                    "cannot open /dev/net/tun (permission denied): run as root or grant CAP_NET_ADMIN"
                ),
                _ => anyhow!("cannot open /dev/net/tun: {e}"),
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: if tap { IFF_TAP } else { IFF_TUN }
                | IFF_NO_PI
                | if vnet { IFF_VNET_HDR } else { 0 }
                | if multi_queue { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` matches in
        // layout and size (40 bytes); the fd is a valid open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) => anyhow!(
                    "cannot create interface {name} (operation not permitted): run as root or grant CAP_NET_ADMIN"
                ),
                Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) if tap => anyhow!(
                    "interface {name} (weftnet's L2 port) already exists: remove it with `ip link del {name}` if no other weftnet uses it"
                ),
                Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) => anyhow!(
                    "interface {name} already exists: choose another --interface or remove it (ip link del {name})"
                ),
                _ => anyhow!(
                    "cannot create {} interface {name}: {e}",
                    if tap { "TAP" } else { "TUN" }
                ),
            });
        }
        Ok(Self {
            file,
            name: name.to_string(),
            offload: if vnet { Offload::VnetHdr } else { Offload::Off },
            multi_queue,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet (after a virtio-net header unless [`Tun::offload`] is off);
    /// `WouldBlock` when none is waiting (the descriptor is non-blocking, see
    /// [`wait_readable`]).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one plain packet (with a plain virtio-net header where the device
    /// expects one).
    pub(crate) fn write(&self, packet: &[u8]) -> io::Result<usize> {
        if self.offload != Offload::Off {
            return self.write_plain_vnet(packet);
        }
        self.write_raw(packet)
    }

    /// Writes `bytes` as they are (a packet, or a virtio-net header and a packet).
    fn write_raw(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: `packet` is a valid readable region of `packet.len()` bytes.
        let n = unsafe { libc::write(self.fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Whether the interface `name` has its carrier on (for a TUN: a queue is attached).
fn has_carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|c| c.trim() == "1")
}

/// Why attaching to an existing interface `name` failed, with the fix.
fn attach_error(name: &str, e: &anyhow::Error) -> anyhow::Error {
    tracing::debug!(error = %format!("{e:#}"), interface = name, "cannot attach");
    anyhow!(
        "interface {name} already exists and weftnet cannot attach to it: another process holds it (another weftnet with --interface {name}?) or it is not a TUN device; stop that process, remove the interface (ip link del {name}) if nothing uses it, or choose another --interface"
    )
}

/// Which of the kernel's offloads a TUN uses (`weftnet status`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offload {
    /// Plain packets, one per read and write.
    Off,
    /// Virtio-net headers: checksum left to us and TCP segments coalesced on write,
    /// but the kernel hands over plain packets (`TUNSETOFFLOAD` refused).
    VnetHdr,
    /// Virtio-net headers, checksum offload and TCP segmentation offload (IPv4 and
    /// IPv6): reads may be super-packets of up to 64 KiB.
    Tso,
}

impl Offload {
    /// The stable name shown by `weftnet status` and the metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Offload::Off => "off",
            Offload::VnetHdr => "vnet-hdr",
            Offload::Tso => "tso",
        }
    }
}

/// Setting that turns the offloads off (`WEFTNET_TUN_OFFLOAD=off`): for comparison in
/// benchmarks, and as a way around a kernel or device that mishandles them.
const OFFLOAD_ENV: &str = "WEFTNET_TUN_OFFLOAD";

// --- Offloads (IFF_VNET_HDR, TUNSETOFFLOAD) -------------------------------------------

impl Tun {
    /// Creates the TUN `name` with a virtio-net header and TSO where the kernel allows
    /// it, and falls back step by step: without `TUNSETOFFLOAD` (headers only), then
    /// without `IFF_VNET_HDR` (plain packets). `WEFTNET_TUN_OFFLOAD=off` asks for plain
    /// packets.
    /// `multi_queue`: open the first queue of a multi-queue device.
    pub(crate) fn create_offloaded(name: &str, multi_queue: bool) -> Result<Self> {
        if std::env::var(OFFLOAD_ENV).is_ok_and(|v| v == "off" || v == "0") {
            return Self::open(name, false, false, multi_queue);
        }
        let mut tun = match Self::open(name, false, true, multi_queue) {
            Ok(t) => t,
            Err(e) => {
                // Without headers, or not at all (then that error is the one to report).
                let plain = Self::open(name, false, false, multi_queue)?;
                tracing::info!(error = %e, "TUN without virtio-net headers");
                return Ok(plain);
            }
        };
        match set_offload(tun.fd()) {
            Ok(()) => tun.offload = Offload::Tso,
            Err(e) => tracing::info!(
                error = %e,
                "TUN offloads refused; reading plain packets with virtio-net headers"
            ),
        }
        Ok(tun)
    }

    /// Which offloads are on.
    pub(crate) fn offload(&self) -> Offload {
        self.offload
    }

    /// Writes `write` as it is: a virtio-net header followed by a packet or a
    /// super-packet (only when [`Tun::offload`] is not off).
    pub(crate) fn write_offloaded(&self, write: &[u8]) -> io::Result<usize> {
        self.write_raw(write)
    }

    /// Writes a plain packet after a zero virtio-net header, in one system call.
    fn write_plain_vnet(&self, packet: &[u8]) -> io::Result<usize> {
        let hdr = weftnet_proto::offload::VnetHdr::PLAIN.encode();
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: two valid iovecs over live buffers; writev only reads them.
        let n = unsafe { libc::writev(self.fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok((n as usize).saturating_sub(hdr.len()))
        }
    }
}

/// Turns on checksum and TCP segmentation offload (IPv4 and IPv6) on a TUN descriptor.
fn set_offload(fd: RawFd) -> io::Result<()> {
    let features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int); the fd is a
    // valid TUN descriptor attached to an interface.
    let rc = unsafe { libc::ioctl(fd, TUNSETOFFLOAD, features as libc::c_ulong) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits up to `timeout_ms` for `fd` to become readable.
pub(crate) fn wait_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    wait_fd(fd, libc::POLLIN, timeout_ms)
}

/// Waits up to `timeout_ms` for `events` (POLLIN, POLLOUT) on `fd`.
pub(crate) fn wait_fd(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match rc {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}
