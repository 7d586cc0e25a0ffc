//! Loading a model: a safetensors checkpoint (a folder URL, a Hub repo or picked files) or one
//! GGUF file, on WebGPU, the single CPU engine or the multi-worker CPU pipeline.

use super::download::{max_shards, weights_cap, DownloadBudget, FILE_CAP, TEXT_FILE_CAP, TOKENIZER_CAP};
use super::error::{Res, WorkerError};
use super::queue::{js_text, Auth, Engine, Loaded};
use super::scorer::Scorer;
use super::shape::{gguf_info, LocalInfo};
use super::storage::{
    check_gguf_fits, choose_storage, gguf_gpu_choice, gguf_types, gpu_or_cpu, gpu_refused, storage_text,
    PLANNED_TOKENS, RESERVE,
};
use crate::protocol::*;
use candle_core::Device;
use js_sys::{Reflect, Uint8Array};
use rewardlens_gpu::{Gpu, GpuRewardModel, WeightFormat};
use rewardlens_models::gguf::{ByteSource, GgufFile};
use rewardlens_models::memory::{MemoryEstimate, WeightStorage, WASM32_MEMORY_LIMIT};
use rewardlens_models::quantized;
use rewardlens_models::weights::StreamedSafetensors;
use rewardlens_models::{files, CheckpointText, InputEncoder, ModelConfig, RewardModel};
use wasm_bindgen_futures::JsFuture;
use web_sys::File;

/// A downloaded file, outside wasm memory.
struct JsBytes(Uint8Array);

// SAFETY: this build has no wasm threads (no atomics), so the array never leaves the worker's
// one thread; the GGUF reader's `Send + Sync` bound is for native multi-threaded use.
unsafe impl Send for JsBytes {}
unsafe impl Sync for JsBytes {}

impl ByteSource for JsBytes {
    fn len(&self) -> u64 {
        self.0.length() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len());
        let end = end.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        self.0.subarray(offset as u32, end as u32).copy_to(buf);
        Ok(())
    }
}

/// How WebGPU holds the weights for a storage choice: f16 by default (half the f32 bytes,
/// scores within 1e-3 on the fixtures); the quantized choices map to the kernels' formats.
fn gpu_format(choice: StorageChoice) -> WeightFormat {
    match choice {
        StorageChoice::Auto => WeightFormat::F16,
        StorageChoice::F32 => WeightFormat::F32,
        StorageChoice::Q8_0 => WeightFormat::Q8_0,
        StorageChoice::Q4K => WeightFormat::Q4_0,
    }
}

impl Engine {
    /// The WebGPU device to load on, or why not: `Ok((None, reason))` runs on the CPU (reason
    /// is None when the CPU was chosen); an error when WebGPU was required and is missing.
    async fn webgpu(&self, backend: BackendChoice) -> Res<(Option<Gpu>, Option<String>)> {
        if backend == BackendChoice::Cpu {
            return gpu_or_cpu(None, backend);
        }
        let has_api = Reflect::get(&self.scope.navigator(), &"gpu".into()).map(|g| !g.is_undefined()).unwrap_or(false);
        let result = if has_api {
            Gpu::new().await.map_err(|e| match e {
                rewardlens_gpu::GpuError::NoAdapter(_) => "this browser offers no WebGPU adapter".to_owned(),
                other => format!("WebGPU gave no device ({other})"),
            })
        } else {
            Err("this browser has no WebGPU (navigator.gpu is missing)".to_owned())
        };
        gpu_or_cpu(Some(result), backend)
    }

    /// Builds the GPU model (and waits until the device holds it), or in auto mode says why the
    /// CPU takes over.
    async fn load_on_gpu(
        &self,
        gpu: Gpu,
        config: ModelConfig,
        weights: &dyn rewardlens_models::weights::WeightSource,
        format: WeightFormat,
        backend: BackendChoice,
    ) -> Res<Result<GpuRewardModel, String>> {
        let loaded = match GpuRewardModel::load(gpu, config, weights, format) {
            Ok(model) => model.gpu().check().await.map(|_| model),
            Err(e) => Err(e),
        };
        match loaded {
            Ok(model) => Ok(Ok(model)),
            Err(e) => gpu_refused(e, backend).map(Err),
        }
    }

    /// A model loaded on WebGPU, described (from a checkpoint or a GGUF alike).
    #[allow(clippy::too_many_arguments)]
    fn gpu_loaded(
        &self,
        inputs: InputEncoder,
        model: GpuRewardModel,
        config: &ModelConfig,
        source: &ModelSource,
        storage: String,
        started: f64,
        stats: (u64, u64),
    ) -> Loaded {
        let estimated_bytes = model.weight_bytes();
        let scorer = Scorer::WebGpu { inputs, model };
        let info = LocalInfo {
            source,
            config,
            storage,
            estimated_bytes,
            load_ms: self.now() - started,
            stats,
            gpu_fallback_reason: None,
        }
        .describe(scorer.runs_on());
        Loaded { scorer, info }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn load(
        &self,
        id: u64,
        source: &ModelSource,
        choice: StorageChoice,
        backend: BackendChoice,
        auth: Auth<'_>,
        files: Vec<File>,
    ) -> Res<Loaded> {
        let started = self.now();
        let mut stats = (0u64, 0u64);
        // Known first: whether the CPU must hold a GGUF decides how large a download may be.
        let (gpu, gpu_reason) = self.webgpu(backend).await?;
        let gguf_cap = if gpu.is_none() { WASM32_MEMORY_LIMIT - RESERVE } else { FILE_CAP };
        let mut picked = std::collections::HashMap::new();
        for f in &files {
            if is_gguf_name(&f.name()) {
                DownloadBudget::new(&f.name(), gguf_cap).declared(Some(f.size() as u64))?;
            }
            let buf = JsFuture::from(f.array_buffer())
                .await
                .map_err(|e| WorkerError::File(format!("cannot read {}: {}", f.name(), js_text(&e))))?;
            picked.insert(f.name(), Uint8Array::new(&buf));
        }
        // Either one GGUF, or a checkpoint folder's files.
        let gguf: Option<(String, Uint8Array)> = match source {
            ModelSource::Files { .. } => {
                picked.iter().find(|(n, _)| is_gguf_name(n)).map(|(n, b)| (n.clone(), b.clone()))
            }
            _ => {
                let base = source.base_url(auth.hub).expect("URL sources have one");
                if is_gguf_name(&base) {
                    let name = base.rsplit('/').next().unwrap_or("model.gguf").to_owned();
                    let b = self.fetch(id, &base, &name, auth, false, gguf_cap, &mut stats).await?.expect("required");
                    Some((name, b))
                } else {
                    None
                }
            }
        };
        if let Some((name, bytes)) = gguf {
            return self.load_gguf(id, source, &name, bytes, started, stats, (gpu, gpu_reason), backend).await;
        }

        // A safetensors checkpoint: small files first, so a bad config or a model too big
        // for the tab is refused before the weights are downloaded.
        let base = source.base_url(auth.hub);
        let get = async |name: &str, optional: bool, cap: u64, stats: &mut (u64, u64)| -> Res<Option<Uint8Array>> {
            match &base {
                Some(b) => self.fetch(id, &format!("{b}{name}"), name, auth, optional, cap, stats).await,
                None => match picked.get(name) {
                    Some(v) => Ok(Some(v.clone())),
                    None if optional => Ok(None),
                    None => Err(WorkerError::MissingFiles(format!(
                        "{name} is missing: pick a GGUF file, or a checkpoint's config.json, tokenizer.json, \
                         tokenizer_config.json and .safetensors file(s) together"
                    ))),
                },
            }
        };
        let text = |b: Uint8Array, name: &str| -> Res<String> {
            String::from_utf8(b.to_vec()).map_err(|_| WorkerError::Corrupted(format!("{name} is not UTF-8 text")))
        };
        let config_json =
            text(get(files::CONFIG, false, TEXT_FILE_CAP, &mut stats).await?.expect("required"), files::CONFIG)?;
        let config = ModelConfig::from_json(&config_json)?;
        let (mut gpu, mut gpu_reason) = (gpu, gpu_reason);
        // On the GPU only one tensor at a time passes through wasm memory; the CPU engine must
        // hold them all, so its size check waits until the CPU is certain to be used.
        let cpu_storage = if gpu.is_none() { Some(choose_storage(&config, choice)?) } else { None };
        self.check_cancel(id)?;
        let tokenizer_config = text(
            get(files::TOKENIZER_CONFIG, false, TEXT_FILE_CAP, &mut stats).await?.expect("required"),
            files::TOKENIZER_CONFIG,
        )?;
        let tokenizer = get(files::TOKENIZER, false, TOKENIZER_CAP, &mut stats).await?.expect("required").to_vec();
        let template = match get(files::CHAT_TEMPLATE, true, TEXT_FILE_CAP, &mut stats).await? {
            Some(b) => Some(text(b, files::CHAT_TEMPLATE)?),
            None => None,
        };
        let shard_names = match get(files::WEIGHTS_INDEX, true, TEXT_FILE_CAP, &mut stats).await? {
            Some(index) => files::shard_names(&text(index, files::WEIGHTS_INDEX)?)?,
            None if base.is_none() => {
                let mut names: Vec<String> = picked.keys().filter(|n| n.ends_with(".safetensors")).cloned().collect();
                names.sort();
                if names.is_empty() {
                    return Err(WorkerError::MissingFiles("no .safetensors file among the picked files".into()));
                }
                names
            }
            None => vec![files::SINGLE_WEIGHTS.to_owned()],
        };
        // The shards may hold no more than config.json's parameters can need, in all.
        let counted = rewardlens_models::memory::ParameterCount::of(&config);
        let (parameters, cap) = (counted.total(), weights_cap(counted.total(), counted.embedding));
        if shard_names.len() > max_shards(config.num_hidden_layers) {
            return Err(WorkerError::Corrupted(format!(
                "{} lists {} weight shards, more than a {}-layer model can have ({} at most)",
                files::WEIGHTS_INDEX,
                shard_names.len(),
                config.num_hidden_layers,
                max_shards(config.num_hidden_layers)
            )));
        }
        let mut left = cap;
        let mut shards: Vec<(String, Box<dyn ByteSource>)> = Vec::new();
        let mut shard_arrays: Vec<(String, Uint8Array)> = Vec::new();
        for name in &shard_names {
            self.check_cancel(id)?;
            let bytes = get(name, false, left, &mut stats).await?.expect("required");
            let n = bytes.length() as u64;
            if n > left {
                return Err(WorkerError::TooLarge(format!(
                    "the weight files hold more than the {cap} bytes a model with {parameters} parameters \
                     (config.json) can need"
                )));
            }
            left -= n;
            shard_arrays.push((name.clone(), bytes.clone()));
            shards.push((name.clone(), Box::new(JsBytes(bytes))));
        }
        self.post(&FromWorker::Progress { id, stage: "building the model".into(), done: 0, total: None, rate: 0.0 });
        self.yield_now().await;
        let weights = StreamedSafetensors::new(shards)?;
        let text = CheckpointText {
            config_json: &config_json,
            tokenizer_json: &tokenizer,
            tokenizer_config_json: &tokenizer_config,
            chat_template_jinja: template.as_deref(),
        };
        if let Some(g) = gpu.take() {
            let (cfg, inputs) = InputEncoder::from_checkpoint(&text)?;
            let format = gpu_format(choice);
            match self.load_on_gpu(g, cfg, &weights, format, backend).await? {
                Ok(model) => {
                    let storage = format!("{} on the GPU", format.name());
                    return Ok(self.gpu_loaded(inputs, model, &config, source, storage, started, stats));
                }
                Err(reason) => gpu_reason = Some(reason),
            }
        }
        let (storage, estimate) = match cpu_storage {
            Some(s) => s,
            None => choose_storage(&config, choice)?,
        };
        let quantize = match storage {
            WeightStorage::F32 => None,
            WeightStorage::Quantized(q) => Some(q),
        };
        let storage_text = storage_text(storage);
        let n = self.pipeline_width(estimate.total(), config.num_hidden_layers);
        if n > 1 {
            let (cfg, inputs) = InputEncoder::from_checkpoint(&text)?;
            let sources: Vec<JsBytes> = shard_arrays.iter().map(|(_, a)| JsBytes(a.clone())).collect();
            let refs: Vec<&dyn ByteSource> = sources.iter().map(|s| s as &dyn ByteSource).collect();
            let shard_list: Vec<(String, u64)> =
                shard_arrays.iter().map(|(name, a)| (name.clone(), a.length() as u64)).collect();
            let mut inits = Vec::new();
            let layer_ranges = rewardlens_models::pipeline::stage_layers(cfg.num_hidden_layers, n);
            for (i, layers) in layer_ranges.iter().enumerate() {
                let per_shard =
                    rewardlens_models::pipeline::stage_byte_ranges_safetensors(&refs, &cfg, layers.clone())?;
                let pieces: Vec<_> =
                    per_shard.iter().enumerate().flat_map(|(f, ranges)| crate::stage::pieces_of(f, ranges)).collect();
                inits.push(crate::pipeline::StageMsg::Init {
                    index: i,
                    stages: layer_ranges.len(),
                    layers: layers.clone(),
                    gguf: false,
                    shards: shard_list.clone(),
                    pieces,
                    config_json: Some(config_json.clone()),
                    quantize: quantize.map(|q| q.name().to_owned()),
                    trap: self.pipe.get().crash_stage == Some(i),
                });
            }
            let files = shard_arrays.iter().map(|(_, a)| a.clone()).collect();
            drop((weights, sources, shard_arrays));
            let plans = crate::stage::StagePlan { inits, files };
            let scorer = self.spawn_pipeline(id, cfg, inputs, plans).await?;
            let info = LocalInfo {
                source,
                config: &config,
                storage: storage_text.clone(),
                estimated_bytes: estimate.total(),
                load_ms: self.now() - started,
                stats,
                gpu_fallback_reason: gpu_reason,
            }
            .describe(scorer.runs_on());
            return Ok(Loaded { scorer, info });
        }
        let model = RewardModel::from_checkpoint(&text, &weights, quantize, &Device::Cpu)?;
        let scorer = Scorer::Local(model);
        let info = LocalInfo {
            source,
            config: &config,
            storage: storage_text,
            estimated_bytes: estimate.total(),
            load_ms: self.now() - started,
            stats,
            gpu_fallback_reason: gpu_reason,
        }
        .describe(scorer.runs_on());
        Ok(Loaded { scorer, info })
    }

    #[allow(clippy::too_many_arguments)]
    async fn load_gguf(
        &self,
        id: u64,
        source: &ModelSource,
        name: &str,
        bytes: Uint8Array,
        started: f64,
        stats: (u64, u64),
        (gpu, mut gpu_reason): (Option<Gpu>, Option<String>),
        backend: BackendChoice,
    ) -> Res<Loaded> {
        let len = bytes.length() as u64;
        // GGUF tensors are copied into wasm memory as they are: the file size is the weights.
        if gpu.is_none() {
            check_gguf_fits(name, len)?;
        }
        self.post(&FromWorker::Progress { id, stage: "building the model".into(), done: 0, total: None, rate: 0.0 });
        self.yield_now().await;
        let parse = |bytes: Uint8Array| {
            GgufFile::parse(Box::new(JsBytes(bytes)))
                .map_err(|e| WorkerError::Corrupted(format!("{name} is not a valid GGUF file: {e}")))
        };
        // A handle to the same JS bytes, to parse again for the CPU if the GPU refuses the model.
        let file = parse(bytes.clone())?;
        let config = quantized::gguf_config(&file)?;
        let types = gguf_types(file.tensors.values().map(|t| t.dtype));
        let types_text = types.iter().cloned().collect::<Vec<_>>().join(", ");
        if let Some(g) = gpu {
            let format = gpu_format(gguf_gpu_choice(&types));
            let (cfg, inputs) = InputEncoder::from_gguf(&file, None)?;
            let weights = quantized::GgufWeights::new(file, cfg.clone());
            match self.load_on_gpu(g, cfg, &weights, format, backend).await? {
                Ok(model) => {
                    let storage = format!("GGUF ({types_text}) as {} on the GPU", format.name());
                    return Ok(self.gpu_loaded(inputs, model, &config, source, storage, started, stats));
                }
                Err(reason) => {
                    check_gguf_fits(name, len)?;
                    gpu_reason = Some(reason);
                    let file = parse(bytes.clone())?;
                    if let Some(l) =
                        self.gguf_pipeline(id, &file, &bytes, source, started, stats, &gpu_reason, &types_text).await?
                    {
                        return Ok(l);
                    }
                    return self.load_gguf_cpu(file, source, len, started, stats, gpu_reason, types_text);
                }
            }
        }
        if let Some(l) = self.gguf_pipeline(id, &file, &bytes, source, started, stats, &gpu_reason, &types_text).await?
        {
            return Ok(l);
        }
        self.load_gguf_cpu(file, source, len, started, stats, gpu_reason, types_text)
    }

    /// How many pipeline workers to run for a model of `bytes` in memory and `layers` layers
    /// (1: the single engine).
    fn pipeline_width(&self, bytes: u64, layers: usize) -> usize {
        let nav = self.scope.navigator();
        let cores = nav.hardware_concurrency() as usize;
        // `navigator.deviceMemory` (GiB, Chromium only) where the browser tells it.
        let memory = Reflect::get(&nav, &"deviceMemory".into())
            .ok()
            .and_then(|m| m.as_f64())
            .map(|gib| (gib * (1u64 << 30) as f64) as u64);
        crate::pipeline::worker_count(self.pipe.get().workers, cores, memory, bytes, layers)
    }

    /// A GGUF on the CPU pipeline when more than one worker is to run; None: the single engine.
    #[allow(clippy::too_many_arguments)]
    async fn gguf_pipeline(
        &self,
        id: u64,
        file: &GgufFile,
        bytes: &Uint8Array,
        source: &ModelSource,
        started: f64,
        stats: (u64, u64),
        gpu_reason: &Option<String>,
        types_text: &str,
    ) -> Res<Option<Loaded>> {
        let len = bytes.length() as u64;
        let config = quantized::gguf_config(file)?;
        let estimate = MemoryEstimate::new(&config, WeightStorage::F32, PLANNED_TOKENS);
        let n = self.pipeline_width(len + estimate.activations, config.num_hidden_layers);
        if n <= 1 {
            return Ok(None);
        }
        let (cfg, inputs) = InputEncoder::from_gguf(file, None)?;
        let layer_ranges = rewardlens_models::pipeline::stage_layers(cfg.num_hidden_layers, n);
        let mut inits = Vec::new();
        for (i, layers) in layer_ranges.iter().enumerate() {
            let ranges = rewardlens_models::pipeline::stage_byte_ranges_gguf(file, &cfg, layers.clone())?;
            inits.push(crate::pipeline::StageMsg::Init {
                index: i,
                stages: layer_ranges.len(),
                layers: layers.clone(),
                gguf: true,
                shards: vec![("model.gguf".into(), len)],
                pieces: crate::stage::pieces_of(0, &ranges),
                config_json: None,
                quantize: None,
                trap: self.pipe.get().crash_stage == Some(i),
            });
        }
        let plans = crate::stage::StagePlan { inits, files: vec![bytes.clone()] };
        let scorer = self.spawn_pipeline(id, cfg, inputs, plans).await?;
        let info = gguf_info(source, &config, types_text, len, self.now() - started, stats, gpu_reason.clone())
            .describe(scorer.runs_on());
        Ok(Some(Loaded { scorer, info }))
    }

    /// Starts the stage workers of `plans` and wraps them as a scorer.
    async fn spawn_pipeline(
        &self,
        id: u64,
        config: ModelConfig,
        inputs: InputEncoder,
        plans: crate::stage::StagePlan,
    ) -> Res<Scorer> {
        let stage = format!("starting {} engine workers", plans.inits.len());
        self.post(&FromWorker::Progress { id, stage, done: 0, total: None, rate: 0.0 });
        let chunk = self.pipe.get().chunk_tokens.unwrap_or(crate::pipeline::DEFAULT_CHUNK_TOKENS);
        let pipeline = crate::stage::Pipeline::spawn(&self.scope, plans, chunk).await?;
        Ok(Scorer::Pipeline { inputs, config, pipeline })
    }

    #[allow(clippy::too_many_arguments)]
    fn load_gguf_cpu(
        &self,
        file: GgufFile,
        source: &ModelSource,
        len: u64,
        started: f64,
        stats: (u64, u64),
        gpu_reason: Option<String>,
        types_text: String,
    ) -> Res<Loaded> {
        let config = quantized::gguf_config(&file)?;
        let model = RewardModel::from_gguf(file, None, &Device::Cpu)?;
        let scorer = Scorer::Local(model);
        let info = gguf_info(source, &config, &types_text, len, self.now() - started, stats, gpu_reason)
            .describe(scorer.runs_on());
        Ok(Loaded { scorer, info })
    }
}
