//! Reads from chained mode's pod ports (a virtio-net header and a frame from a pod's
//! veth): offload split, multicast-IP decision, the port's source check and reports.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weftnet_proto::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::pod_port(data));
