//! Arbitrary datagrams in the gossip range, as a host without the secret sends them:
//! envelope parsing and authentication.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::gossip_datagram(data));
