//! IP headers of packets read from the TUN device and of decrypted packets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::ip_header(data));
