#![no_main]
//! See `livesnap_fuzz::targets::x509` for the input layout and the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livesnap_fuzz::targets::x509::run(data));
