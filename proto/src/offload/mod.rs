//! TUN offloads as pure code: the virtio-net header the kernel puts before every packet
//! on a TUN opened with `IFF_VNET_HDR`, the split of a TCP segmentation-offload (TSO)
//! super-packet into MTU-sized packets with their checksums, and the coalescing of
//! received TCP segments of one flow into one super-packet for a single TUN write
//! (receive offload, GRO). Works on untrusted bytes; never panics.
//!
//! - [`vnet`]: the 10-byte `virtio_net_hdr`.
//! - [`checksum`]: the Internet checksum (RFC 1071) and the pseudo-headers.
//! - [`split`]: one read from the TUN into plain IP packets.
//! - [`coalesce`]: decrypted packets into as few TUN writes as possible.

pub mod checksum;
pub mod coalesce;
pub mod split;
pub mod vnet;

pub use coalesce::Coalescer;
pub use split::{split, SplitError};
pub use vnet::{GsoType, VnetHdr, VNET_HDR_LEN};

/// IP protocol number of TCP.
pub(crate) const PROTO_TCP: u8 = 6;

#[cfg(test)]
pub(crate) mod testpkt;
