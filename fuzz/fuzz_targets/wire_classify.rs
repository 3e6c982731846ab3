//! Every datagram that reaches the UDP port is classified first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::wire_classify(data));
