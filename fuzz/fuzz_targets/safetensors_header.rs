#![no_main]
//! The safetensors header reader never panics on any bytes.
use libfuzzer_sys::fuzz_target;
use rewardlens_models::st_header::{header_len, parse_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = header_len(data, data.len() as u64) {
        let _ = parse_header(&data[8..n as usize], data.len() as u64);
    }
});
