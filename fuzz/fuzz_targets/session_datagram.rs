//! Arbitrary datagrams fed to a WireGuard session and to initiator identification.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::session_datagram(data));
