#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzz::sip_datagram(data));
