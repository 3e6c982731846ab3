//! Reads from a TUN with IFF_VNET_HDR through the TSO splitter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::offload_split(data));
