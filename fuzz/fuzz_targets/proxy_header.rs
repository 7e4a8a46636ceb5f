#![no_main]
//! See `livesnap_fuzz::targets::proxy_header` for the input layout and the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livesnap_fuzz::targets::proxy_header::run(data));
