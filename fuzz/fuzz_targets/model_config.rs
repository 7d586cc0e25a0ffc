#![no_main]
//! Any config.json text gives a config or an error: counts are bounded before anything is sized
//! from them, and what is accepted can be estimated and its rotary table built.
use libfuzzer_sys::fuzz_target;
use rewardlens_models::memory::{MemoryEstimate, WeightStorage};
use rewardlens_models::quantized::QuantType;
use rewardlens_models::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = ModelConfig::from_json(text) {
        for s in [WeightStorage::F32, WeightStorage::Quantized(QuantType::Q4K)] {
            let _ = MemoryEstimate::new(&c, s, 1 << 20).total();
        }
        let _ = c.rope_inv_freq();
    }
});
