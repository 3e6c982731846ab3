//! Crypto-key routing decisions on decrypted (peer-controlled) packets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::router(data));
