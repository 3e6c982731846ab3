//! Node and CA certificates (they travel in gossip records): the decoder,
//! re-encoding and the CA signature check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::certificate(data));
