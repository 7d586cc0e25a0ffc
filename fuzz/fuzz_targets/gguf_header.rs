#![no_main]
//! Any bytes given to the GGUF parser give Ok or Err, never a panic, hang or huge allocation;
//! for parsed files, reading every tensor stays within bounds.
use libfuzzer_sys::fuzz_target;
use rewardlens_models::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec()) {
        for name in f.tensor_order.clone() {
            let _ = f.tensor_data(&name);
        }
    }
});
