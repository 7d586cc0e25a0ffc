//! Where a model is held and whether it fits: the CPU storage choice against wasm32 memory,
//! WebGPU or the CPU, and the GPU weight format a GGUF keeps.

use super::error::{Res, WorkerError};
use crate::protocol::{BackendChoice, StorageChoice};
use rewardlens_models::memory::{pick_storage, MemoryEstimate, WeightStorage, WASM32_MEMORY_LIMIT};
use rewardlens_models::quantized::QuantType;
use rewardlens_models::ModelConfig;
use std::collections::BTreeSet;

/// wasm memory kept free for the tokenizer, the program and allocator slack.
pub const RESERVE: u64 = 512 << 20;
/// Longest sequence the memory estimate plans for.
pub const PLANNED_TOKENS: usize = 4096;

pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn too_large(what: &str, need: u64) -> WorkerError {
    WorkerError::TooLarge(format!(
        "{what} needs about {} of memory, more than the {} a browser tab's WebAssembly can address \
         (less {} kept for the program). Choose q4_k storage or a smaller model, or score it on a \
         server (rewardlens serve) when remote scoring is configured.",
        gib(need),
        gib(WASM32_MEMORY_LIMIT),
        gib(RESERVE)
    ))
}

/// Picks how to hold the weights and checks that it fits, before any weight is downloaded.
pub fn choose_storage(config: &ModelConfig, choice: StorageChoice) -> Res<(WeightStorage, MemoryEstimate)> {
    let candidates: Vec<WeightStorage> = match choice {
        StorageChoice::Auto => rewardlens_models::memory::AUTO_CPU_STORAGE.to_vec(),
        StorageChoice::F32 => vec![WeightStorage::F32],
        StorageChoice::Q8_0 => vec![WeightStorage::Quantized(QuantType::Q8_0)],
        StorageChoice::Q4K => vec![WeightStorage::Quantized(QuantType::Q4K)],
    };
    pick_storage(config, &candidates, PLANNED_TOKENS, RESERVE).map_err(|last| {
        let what = format!("this model ({:.2}B parameters)", last.parameters as f64 / 1e9);
        too_large(&what, last.total() + RESERVE)
    })
}

/// A GGUF the CPU holds as it is (its tensors are copied into wasm memory): refused when the
/// file and the reserve pass wasm32's memory.
pub fn check_gguf_fits(name: &str, len: u64) -> Res<()> {
    if len + RESERVE > WASM32_MEMORY_LIMIT {
        return Err(too_large(name, len + RESERVE));
    }
    Ok(())
}

/// How the CPU storage is shown in the model info.
pub fn storage_text(storage: WeightStorage) -> String {
    match storage {
        WeightStorage::F32 => "f32".into(),
        WeightStorage::Quantized(q) => format!("{} (quantized on load)", q.name()),
    }
}

/// A GGUF's tensor types, lower case (`f32`, `q8_0`, ...), from their debug names.
pub fn gguf_types<T: std::fmt::Debug>(dtypes: impl IntoIterator<Item = T>) -> BTreeSet<String> {
    dtypes.into_iter().map(|t| format!("{t:?}").to_lowercase()).collect()
}

/// The GPU keeps a GGUF's precision class: 4-bit files as Q4_0, 8-bit (and 5/6-bit) as Q8_0,
/// else f16 — given as the storage choice whose GPU format that is (`load::gpu_format`).
pub fn gguf_gpu_choice(types: &BTreeSet<String>) -> StorageChoice {
    if types.iter().any(|t| t.starts_with("q4")) {
        StorageChoice::Q4K
    } else if types.iter().any(|t| t.starts_with("q8") || t.starts_with("q5") || t.starts_with("q6")) {
        StorageChoice::Q8_0
    } else {
        StorageChoice::Auto
    }
}

/// Where the model goes after probing WebGPU (`probe` is None when the CPU was chosen):
/// `(Some(gpu), None)` on the GPU, `(None, reason)` on the CPU (the reason is None when the CPU
/// was chosen); an error when WebGPU was required and is missing.
pub fn gpu_or_cpu<G>(probe: Option<Result<G, String>>, backend: BackendChoice) -> Res<(Option<G>, Option<String>)> {
    match (probe, backend) {
        (None, _) => Ok((None, None)),
        (Some(Ok(gpu)), _) => Ok((Some(gpu), None)),
        (Some(Err(reason)), BackendChoice::WebGpu) => {
            Err(WorkerError::Gpu(format!("{reason}; choose WASM CPU or auto")))
        }
        (Some(Err(reason)), _) => Ok((None, Some(reason))),
    }
}

/// WebGPU could not hold the model (`e`): in auto mode the reason the CPU takes over, else the
/// job's error.
pub fn gpu_refused(e: impl std::fmt::Display, backend: BackendChoice) -> Res<String> {
    match backend {
        BackendChoice::Auto => Ok(format!("WebGPU could not hold the model ({e})")),
        _ => Err(WorkerError::Gpu(format!("WebGPU could not hold the model: {e}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The fixture qwen3-seq's config (9.74M parameters).
    pub(crate) fn small_config() -> ModelConfig {
        ModelConfig::from_json(include_str!("../../../tests/fixtures/models/qwen3-seq/config.json")).unwrap()
    }

    fn scaled_config(layers: usize, hidden: usize) -> ModelConfig {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/models/qwen3-seq/config.json")).unwrap();
        v["num_hidden_layers"] = layers.into();
        v["hidden_size"] = hidden.into();
        v["intermediate_size"] = (hidden * 3).into();
        v.as_object_mut().unwrap().remove("layer_types");
        ModelConfig::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn storage_follows_the_choice_and_refuses_what_wasm_cannot_hold() {
        let small = small_config();
        assert_eq!(choose_storage(&small, StorageChoice::F32).unwrap().0, WeightStorage::F32);
        assert_eq!(choose_storage(&small, StorageChoice::Auto).unwrap().0, WeightStorage::Quantized(QuantType::Q8_0));
        assert_eq!(choose_storage(&small, StorageChoice::Q4K).unwrap().0, WeightStorage::Quantized(QuantType::Q4K));
        assert_eq!(storage_text(WeightStorage::F32), "f32");
        assert_eq!(storage_text(WeightStorage::Quantized(QuantType::Q8_0)), "q8_0 (quantized on load)");

        // Billions of parameters: no storage fits a tab.
        let big = scaled_config(64, 4096);
        let e = choose_storage(&big, StorageChoice::Auto).unwrap_err();
        assert_eq!(e.code(), "too_large");
        let text = e.to_string();
        assert!(text.starts_with("this model (") && text.contains("B parameters) needs about"), "{text}");
        assert!(text.contains("than the 4.00 GiB") && text.contains("(less 0.50 GiB kept"), "{text}");
        assert!(matches!(choose_storage(&big, StorageChoice::F32), Err(WorkerError::TooLarge(_))));
    }

    #[test]
    fn ggufs_fit_by_their_size_and_keep_their_precision_on_the_gpu() {
        check_gguf_fits("m.gguf", 1 << 30).unwrap();
        let e = check_gguf_fits("m.gguf", (4 << 30) - RESERVE + 1).unwrap_err();
        assert!(e.to_string().starts_with("m.gguf needs about 4.00 GiB"), "{e}");
        assert_eq!(gib(3 << 29), "1.50 GiB");

        #[derive(Debug)]
        #[allow(non_camel_case_types, dead_code)]
        enum T {
            F32,
            Q4K,
            Q6K,
            Q8_0,
            F16,
        }
        let types = gguf_types([T::F32, T::Q4K, T::F32, T::Q6K]);
        assert_eq!(types.iter().cloned().collect::<Vec<_>>(), ["f32", "q4k", "q6k"]);
        assert_eq!(gguf_gpu_choice(&types), StorageChoice::Q4K);
        assert_eq!(gguf_gpu_choice(&gguf_types([T::F32, T::Q6K])), StorageChoice::Q8_0);
        assert_eq!(gguf_gpu_choice(&gguf_types([T::Q8_0])), StorageChoice::Q8_0);
        assert_eq!(gguf_gpu_choice(&gguf_types([T::F16, T::F32])), StorageChoice::Auto);
    }

    #[test]
    fn webgpu_is_used_when_offered_and_required_only_when_chosen() {
        let missing = || Some(Err::<u8, _>("no adapter".to_string()));
        assert_eq!(gpu_or_cpu::<u8>(None, BackendChoice::Cpu).unwrap(), (None, None));
        assert_eq!(gpu_or_cpu(Some(Ok(7u8)), BackendChoice::Auto).unwrap(), (Some(7), None));
        assert_eq!(gpu_or_cpu(missing(), BackendChoice::Auto).unwrap(), (None, Some("no adapter".into())));
        let e = gpu_or_cpu(missing(), BackendChoice::WebGpu).unwrap_err();
        assert_eq!((e.code(), e.to_string()), ("webgpu", "no adapter; choose WASM CPU or auto".into()));

        assert_eq!(
            gpu_refused("out of memory", BackendChoice::Auto).unwrap(),
            "WebGPU could not hold the model (out of memory)"
        );
        let e = gpu_refused("out of memory", BackendChoice::WebGpu).unwrap_err();
        assert_eq!((e.code(), e.to_string()), ("webgpu", "WebGPU could not hold the model: out of memory".into()));
    }
}
