#![no_main]
mod shared;
libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::check(&ringman_protocols::Text, data));
