//! IPv6/MLD packets the kernel writes to the TUN (Hop-by-Hop, ICMPv6 MLD), then
//! the group table and the multicast replicator on the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::mld(data));
