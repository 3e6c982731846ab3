//! Arbitrary plaintexts sealed with the cluster key, as a member with the secret could
//! send them: every decoder behind the AEAD.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::gossip_plaintext(data));
