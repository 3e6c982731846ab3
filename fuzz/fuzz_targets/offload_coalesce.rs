//! Decrypted packets through the receive (GRO) coalescer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::offload_coalesce(data));
