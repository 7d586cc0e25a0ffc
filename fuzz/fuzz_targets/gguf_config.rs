#![no_main]
//! A GGUF that parses gives a model config, a tokenizer pair or an error, never a panic (a zero
//! head count, a head of 2^40 rows) or an allocation sized by a hostile count; a config it gives
//! also sizes its memory estimate without overflowing.
use libfuzzer_sys::fuzz_target;
use rewardlens_models::gguf::GgufFile;
use rewardlens_models::memory::{MemoryEstimate, WeightStorage};
use rewardlens_models::quantized::{gguf_config, gguf_tokenizer};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else { return };
    let _ = gguf_tokenizer(&f);
    if let Ok(c) = gguf_config(&f) {
        let _ = MemoryEstimate::new(&c, WeightStorage::F32, 4096).total();
        let _ = c.rope_inv_freq();
    }
});
