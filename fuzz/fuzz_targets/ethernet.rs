//! Ethernet frames read from the bridge's L2 port (bridge mode): header parsing, the
//! multicast-IP decision and re-framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::ethernet(data));
