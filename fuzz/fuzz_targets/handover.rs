//! A key hand-over and a record body that may carry one (as a member with the secret
//! sends them, PROTOCOL.md §6.13): decoding, re-encoding, the old key's signature
//! check and the retired-key register.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::handover(data));
