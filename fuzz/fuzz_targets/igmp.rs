//! IPv4/IGMP packets the kernel writes to the TUN (reports, leaves, queries), then
//! the group table and the multicast replicator on the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::igmp(data));
