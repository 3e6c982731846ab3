//! The XEdDSA signature check on arbitrary keys, signatures and messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::signature(data));
