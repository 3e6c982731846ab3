//! One gossip entry (as a member with the secret sends it): the entry decoder,
//! re-encoding and the owner-signature check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::signed_entry(data));
