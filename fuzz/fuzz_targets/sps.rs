#![no_main]
//! See `livesnap_fuzz::targets::sps` for the input layout and the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livesnap_fuzz::targets::sps::run(data));
