//! The TAP device of bridge mode: the daemon's L2 port on the pods' bridge. Opening
//! `/dev/net/tun` in TAP mode (IFF_TAP | IFF_NO_PI) and reading/writing whole Ethernet
//! frames. Closing it (dropping) removes the interface.

use anyhow::{anyhow, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP interface.
pub(crate) struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates the TAP interface `name` (at most 15 bytes; must not exist yet).
    pub(crate) fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(anyhow!(
                "invalid L2 port name {name:?}: use a shorter --interface (at most 12 characters)"
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| anyhow!("cannot open /dev/net/tun for the L2 port {name}: {e}"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` matches in
        // layout and size (40 bytes); the fd is a valid open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) => anyhow!(
                    "interface {name} (weftnet's L2 port) already exists: remove it with `ip link del {name}` if no other weftnet uses it"
                ),
                _ => anyhow!("cannot create TAP interface {name}: {e}"),
            });
        }
        Ok(Self {
            file,
            name: name.to_string(),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame; `WouldBlock` when none is waiting (non-blocking descriptor).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame.
    pub(crate) fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a valid readable region of `frame.len()` bytes.
        let n = unsafe { libc::write(self.fd(), frame.as_ptr().cast(), frame.len()) };
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

/// The L2 port's name for overlay interface `interface`: `<interface>-l2`, cut to the
/// 15 bytes an interface name may have.
pub(crate) fn port_name(interface: &str) -> String {
    // Longest prefix (on a character boundary) that leaves room for "-l2".
    let room = libc::IFNAMSIZ - 1 - 3;
    let cut = (0..=interface.len().min(room))
        .rev()
        .find(|i| interface.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}-l2", &interface[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_an_interface_name() {
        assert_eq!(port_name("weft0"), "weft0-l2");
        assert_eq!(port_name("abcdefghijklmno"), "abcdefghijkl-l2");
        assert_eq!(port_name("abcdefghijkl"), "abcdefghijkl-l2");
        assert!(port_name("abcdefghijklm").len() <= 15);
    }
}
