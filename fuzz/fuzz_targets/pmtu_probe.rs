//! Decrypted inner packets checked as path MTU probes and acks (PROTOCOL.md §9.2).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::pmtu_probe(data));
