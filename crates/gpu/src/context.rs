//! The device, buffers and dispatch.

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter: {0} (natively, install a Vulkan driver such as Mesa's lavapipe, package mesa-vulkan-drivers)"
    )]
    NoAdapter(String),
    #[error("the GPU refused a device: {0}")]
    NoDevice(String),
    #[error("reading back from the GPU: {0}")]
    Readback(String),
    #[error("{0}")]
    Shape(String),
    #[error("the GPU reported: {0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// What a GPU buffer holds, for [`GpuMemory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// The model's matrices, norms and biases: uploaded once.
    Weights,
    /// A pass's inputs, activations and outputs: pooled, reused by later passes.
    Activations,
    /// Kernel parameters: pooled like activations.
    Uniforms,
    /// Readback buffers the CPU maps.
    Staging,
}

impl BufferKind {
    pub const ALL: [Self; 4] = [Self::Weights, Self::Activations, Self::Uniforms, Self::Staging];

    pub fn name(self) -> &'static str {
        match self {
            Self::Weights => "weights",
            Self::Activations => "activations",
            Self::Uniforms => "uniforms",
            Self::Staging => "staging",
        }
    }
}

/// Bytes of the GPU buffers alive (created and not yet destroyed, pooled ones included), by
/// [`BufferKind`] in [`BufferKind::ALL`]'s order, and the most alive at once since the last
/// [`Gpu::reset_memory_peak`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuMemory {
    pub alive: [u64; 4],
    pub peak: [u64; 4],
    /// The most bytes of all kinds alive at once.
    pub peak_total: u64,
    /// Buffers created since the device started (a pass that reuses the pool creates none).
    pub created: u64,
}

impl GpuMemory {
    pub fn alive_total(&self) -> u64 {
        self.alive.iter().sum()
    }

    pub fn of(&self, kind: BufferKind) -> (u64, u64) {
        let i = kind as usize;
        (self.alive[i], self.peak[i])
    }

    /// "weights 1,201.3 MiB; peak 1,230.0 MiB (activations 20.1, uniforms 0.1, staging 0.0)".
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let peaks: Vec<String> =
            BufferKind::ALL[1..].iter().map(|k| format!("{} {:.1}", k.name(), mib(self.peak[*k as usize]))).collect();
        format!(
            "weights {:.1} MiB; peak {:.1} MiB ({} MiB)",
            mib(self.alive[BufferKind::Weights as usize]),
            mib(self.peak_total),
            peaks.join(", ")
        )
    }

    fn add(&mut self, kind: BufferKind, bytes: u64) {
        let i = kind as usize;
        self.alive[i] += bytes;
        self.peak[i] = self.peak[i].max(self.alive[i]);
        self.peak_total = self.peak_total.max(self.alive_total());
        self.created += 1;
    }

    fn sub(&mut self, kind: BufferKind, bytes: u64) {
        self.alive[kind as usize] -= bytes;
    }
}

/// A buffer no longer referenced by the caller, kept for reuse (or, for weights, until it can
/// be destroyed).
struct Free {
    buffer: wgpu::Buffer,
    /// The submission that holds its last use (at the latest). Once that is submitted, the
    /// queue orders a `write_buffer` after those uses, and `destroy` waits for them; before,
    /// the uses sit in the encoder still being recorded.
    last_use: u64,
}

/// The device's buffer accounting and the pool of per-pass buffers.
#[derive(Default)]
struct Buffers {
    memory: GpuMemory,
    /// Free buffers by kind and size, oldest first (`last_use` never decreases along one).
    free: std::collections::HashMap<(BufferKind, u64), std::collections::VecDeque<Free>>,
    /// Submissions made so far; counted under the same lock as the queue's `submit` call, so
    /// no `write_buffer` slips between the count and the submission.
    submitted: u64,
    /// Command encoders opened and not yet submitted (the one being recorded, or one taken for
    /// a submission that has not happened yet).
    open_encoders: u64,
}

impl Buffers {
    /// A free buffer of `kind` and `size`; with `settled`, only one whose uses are submitted.
    fn take(&mut self, kind: BufferKind, size: u64, settled: bool) -> Option<wgpu::Buffer> {
        let list = self.free.get_mut(&(kind, size))?;
        let free = if settled {
            list.front().is_some_and(|f| f.last_use <= self.submitted).then(|| list.pop_front()).flatten()
        } else {
            list.pop_back()
        };
        free.map(|f| f.buffer)
    }

    /// Destroys the free buffers of `kind` whose uses are submitted: a pass of another shape
    /// needs new ones, and the earlier shape's would otherwise stay alive beside them.
    fn trim(&mut self, kind: BufferKind) {
        let submitted = self.submitted;
        self.destroy_free(|k, last_use| k == kind && last_use <= submitted);
    }

    /// After submission `s`: destroys the free buffers that none of its commands used (free
    /// since before it was recorded), so the pool holds what the last pass needed; weights
    /// let go of before it go too.
    fn retire_unused(&mut self, s: u64) {
        self.destroy_free(|_, last_use| last_use < s);
    }

    fn destroy_free(&mut self, stale: impl Fn(BufferKind, u64) -> bool) {
        for (&(kind, size), list) in &mut self.free {
            // Oldest first: the stale ones lead.
            while list.front().is_some_and(|f| stale(kind, f.last_use)) {
                let f = list.pop_front().expect("checked");
                self.memory.sub(kind, size);
                f.buffer.destroy();
            }
        }
        self.free.retain(|_, list| !list.is_empty());
    }
}

/// A storage buffer of `len` 32-bit elements. Dropping it hands it back to its device: a
/// pass's buffer goes to the pool for the next pass, a weight buffer is destroyed with the
/// next submission.
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub len: usize,
    kind: BufferKind,
    owner: std::sync::Arc<std::sync::Mutex<Buffers>>,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let Ok(mut b) = self.owner.lock() else { return };
        release(&mut b, self.buffer.clone(), self.kind);
    }
}

/// A buffer the caller no longer references: a readback buffer (its copy submitted, unmapped)
/// is destroyed; the rest wait in the pool, weights only until the next submission (the model
/// is gone, but the encoder being recorded may still use them).
fn release(b: &mut Buffers, buffer: wgpu::Buffer, kind: BufferKind) {
    if kind == BufferKind::Staging {
        b.memory.sub(kind, buffer.size());
        buffer.destroy();
    } else {
        // Its last use is in the encoder being recorded, if there is one, else submitted.
        let last_use = b.submitted + u64::from(b.open_encoders > 0);
        b.free.entry((kind, buffer.size())).or_default().push_back(Free { buffer, last_use });
    }
}

/// A kernel's uniform buffer; back to the pool when dropped.
pub(crate) struct Uniform {
    pub(crate) buffer: wgpu::Buffer,
    owner: std::sync::Arc<std::sync::Mutex<Buffers>>,
}

impl Drop for Uniform {
    fn drop(&mut self) {
        let Ok(mut b) = self.owner.lock() else { return };
        release(&mut b, self.buffer.clone(), BufferKind::Uniforms);
    }
}

/// Weight bytes written between submissions while loading: bounds the staging copies the
/// driver holds for `write_buffer` (all of a model's, had nothing been submitted until the end).
const UPLOAD_SUBMIT_BYTES: u64 = 64 << 20;

/// A weights buffer being filled in order, piece by piece ([`Gpu::begin_weights`]): each piece
/// goes through the queue at once, so a large table need not be whole in host memory.
pub struct WeightUpload<'g> {
    gpu: &'g Gpu,
    buffer: GpuBuffer,
    written: u64,
}

impl WeightUpload<'_> {
    /// Appends `bytes` (a whole number of 32-bit words).
    ///
    /// Panics past the buffer's end or on a partial word (callers write whole rows of words).
    pub fn write(&mut self, bytes: &[u8]) {
        assert!(bytes.len().is_multiple_of(4), "weights are written in whole 32-bit words");
        assert!(self.written + bytes.len() as u64 <= self.buffer.len as u64 * 4, "weights written past their buffer");
        if !bytes.is_empty() {
            self.gpu.queue.write_buffer(&self.buffer.buffer, self.written, bytes);
            self.written += bytes.len() as u64;
            self.gpu.uploaded(bytes.len() as u64);
        }
    }

    /// The buffer, once every word was written.
    ///
    /// Panics if some were not (the GPU would read zeros as weights).
    pub fn finish(self) -> GpuBuffer {
        assert_eq!(self.written, self.buffer.len as u64 * 4, "weights buffer not filled");
        self.buffer
    }
}

/// What the caller allows the device to use: the optional features are taken only when the
/// adapter has them; tests turn them off to exercise the fallbacks, and lower `max_binding` to
/// exercise buffer splitting on a small model.
#[derive(Debug, Clone, Copy)]
pub struct GpuOptions {
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Cap on one storage binding, below the adapter's `maxStorageBufferBindingSize`.
    pub max_binding: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self { shader_f16: true, subgroups: true, max_binding: None }
    }
}

/// A device and its queue, with what the adapter can do.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Adapter name and backend, for reports.
    pub adapter: String,
    pub limits: wgpu::Limits,
    /// `shader-f16` is enabled on the device.
    pub shader_f16: bool,
    /// Subgroup operations are enabled on the device.
    pub subgroups: bool,
    /// A CPU rasterizer (lavapipe, SwiftShader, WARP), as the adapter reports it.
    pub software: bool,
    /// Largest storage binding in bytes (the smaller of the device's binding and buffer limits).
    pub max_binding: u64,
    /// Dispatches recorded since the last submit: a forward pass is one submission, not one
    /// per op (each submit costs a round trip to the driver, and in the browser to the GPU
    /// process).
    pending: std::sync::Mutex<Option<wgpu::CommandEncoder>>,
    /// The first validation or out-of-memory error the device raised since the last readback:
    /// wgpu's default would panic (in the browser, kill the worker); we report it instead.
    device_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    buffers: std::sync::Arc<std::sync::Mutex<Buffers>>,
    /// Weight bytes written since the last submission (see [`UPLOAD_SUBMIT_BYTES`]).
    unsubmitted_upload: std::sync::Mutex<u64>,
}

/// "name (backend)"; browsers may withhold the name, then the driver or vendor stands in.
fn adapter_label(info: &wgpu::AdapterInfo) -> String {
    let name = [&info.name, &info.driver, &info.driver_info]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| if info.vendor != 0 { format!("vendor {:#x}", info.vendor) } else { "adapter".into() });
    let backend = match info.backend {
        wgpu::Backend::BrowserWebGpu => "WebGPU".to_owned(),
        other => format!("{other:?}"),
    };
    format!("{name} ({backend})")
}

impl Gpu {
    /// The first adapter wgpu offers (high performance preferred), with its own limits.
    pub async fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default()).await
    }

    pub async fn with_options(options: GpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let available = adapter.features();
        let mut features = wgpu::Features::empty();
        let shader_f16 = options.shader_f16 && available.contains(wgpu::Features::SHADER_F16);
        if shader_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let subgroups = options.subgroups && available.contains(wgpu::Features::SUBGROUP);
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("rewardlens"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(e.to_string()))?;
        let device_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let slot = device_error.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            let mut slot = slot.lock().expect("error slot");
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let device_max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding = options.max_binding.map_or(device_max, |m| m.min(device_max));
        Ok(Self {
            device,
            queue,
            adapter: adapter_label(&info),
            limits,
            shader_f16,
            subgroups,
            software: info.device_type == wgpu::DeviceType::Cpu,
            max_binding,
            pending: std::sync::Mutex::new(None),
            device_error,
            buffers: Default::default(),
            unsubmitted_upload: std::sync::Mutex::new(0),
        })
    }

    /// `new`, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options_blocking(options: GpuOptions) -> Result<Self> {
        pollster::block_on(Self::with_options(options))
    }

    /// The features in use, for reports: "shader-f16, subgroups" or "none".
    pub fn feature_names(&self) -> String {
        let mut f = vec![];
        if self.shader_f16 {
            f.push("shader-f16");
        }
        if self.subgroups {
            f.push("subgroups");
        }
        if f.is_empty() {
            "none".into()
        } else {
            f.join(", ")
        }
    }

    /// Waits for the queue and reports the first error the device raised since the last check
    /// (an allocation the device could not hold surfaces here, not where it was requested).
    pub async fn check(&self) -> Result<()> {
        self.download_f32(&self.zeros(1)).await.map(|_| ())
    }

    /// Bytes of GPU buffers alive by kind, and their peak since [`Self::reset_memory_peak`].
    pub fn memory(&self) -> GpuMemory {
        self.buffers.lock().expect("buffer lock").memory
    }

    /// Starts a new peak from what is alive now (e.g. before a pass, to read its own peak).
    pub fn reset_memory_peak(&self) {
        let mut b = self.buffers.lock().expect("buffer lock");
        let m = &mut b.memory;
        m.peak = m.alive;
        m.peak_total = m.alive_total();
    }

    /// Submits what was recorded.
    pub fn flush(&self) {
        // Submitted under the encoder lock: no other thread records into a new encoder and
        // submits it first, so submissions run in the order their commands were recorded.
        let mut pending = self.pending.lock().expect("encoder lock");
        if let Some(enc) = pending.take() {
            self.submit(Some(enc.finish()));
        }
    }

    /// A new command encoder, counted open until [`Self::submit`] takes it.
    fn open_encoder(&self) -> wgpu::CommandEncoder {
        self.buffers.lock().expect("buffer lock").open_encoders += 1;
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// Submits an opened encoder's `commands` (none: just the queue's pending writes); returns
    /// the submission's number.
    fn submit(&self, commands: Option<wgpu::CommandBuffer>) -> u64 {
        let mut b = self.buffers.lock().expect("buffer lock");
        b.submitted += 1;
        if commands.is_some() {
            b.open_encoders -= 1;
        }
        self.queue.submit(commands);
        let s = b.submitted;
        b.retire_unused(s);
        s
    }

    /// A new buffer, counted.
    fn create(&self, kind: BufferKind, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        self.buffers.lock().expect("buffer lock").memory.add(kind, size);
        buffer
    }

    fn wrap(&self, buffer: wgpu::Buffer, len: usize, kind: BufferKind) -> GpuBuffer {
        GpuBuffer { buffer, len, kind, owner: self.buffers.clone() }
    }

    const STORAGE: wgpu::BufferUsages =
        wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

    /// A pass's buffer holding `bytes`: a pooled one whose earlier uses have all run (the queue
    /// writes it before this submission's commands), else a new one.
    fn upload_bytes(&self, bytes: &[u8], len: usize) -> GpuBuffer {
        let size = (bytes.len().max(4) as u64).next_multiple_of(4);
        let taken = self.buffers.lock().expect("buffer lock").take(BufferKind::Activations, size, true);
        let buffer = match taken {
            Some(b) => b,
            None => {
                self.buffers.lock().expect("buffer lock").trim(BufferKind::Activations);
                self.create(BufferKind::Activations, "input", size, Self::STORAGE)
            }
        };
        if !bytes.is_empty() {
            self.queue.write_buffer(&buffer, 0, bytes);
        }
        self.wrap(buffer, len, BufferKind::Activations)
    }

    /// A pass's input (cos/sin tables, token ids, a test's operands).
    pub fn upload_f32(&self, data: &[f32]) -> GpuBuffer {
        self.upload_bytes(bytemuck::cast_slice(data), data.len())
    }

    pub fn upload_u32(&self, data: &[u32]) -> GpuBuffer {
        self.upload_bytes(bytemuck::cast_slice(data), data.len())
    }

    /// Weights: written through the queue, with a submission every [`UPLOAD_SUBMIT_BYTES`] so
    /// the driver's staging copies are released as loading goes (natively, waited for).
    pub fn upload_weights(&self, words: &[u32]) -> GpuBuffer {
        let mut upload = self.begin_weights(words.len());
        upload.write(bytemuck::cast_slice(words));
        upload.finish()
    }

    /// A weights buffer of `len` 32-bit words, written a piece at a time ([`WeightUpload`]).
    pub fn begin_weights(&self, len: usize) -> WeightUpload<'_> {
        let size = (len.max(1) * 4) as u64;
        let buffer = self.create(BufferKind::Weights, "weights", size, Self::STORAGE);
        // Wrapped at once: one dropped half-written (a failed load) is uncounted like any other.
        WeightUpload { gpu: self, buffer: self.wrap(buffer, len, BufferKind::Weights), written: 0 }
    }

    /// Counts `bytes` of weights written through the queue, submitting every
    /// [`UPLOAD_SUBMIT_BYTES`].
    fn uploaded(&self, bytes: u64) {
        let mut unsubmitted = self.unsubmitted_upload.lock().expect("upload lock");
        *unsubmitted += bytes;
        if *unsubmitted >= UPLOAD_SUBMIT_BYTES {
            *unsubmitted = 0;
            self.flush();
            // An empty submission still carries the queue's pending writes.
            self.submit(None);
            #[cfg(not(target_arch = "wasm32"))]
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }

    pub fn upload_weights_f32(&self, data: &[f32]) -> GpuBuffer {
        self.upload_weights(bytemuck::cast_slice(data))
    }

    /// `len` zeroed 32-bit elements: a pooled buffer cleared in order with the recorded
    /// commands (its earlier uses come first), else a new one (zeroed by the device).
    pub fn zeros(&self, len: usize) -> GpuBuffer {
        let size = (len.max(1) * 4) as u64;
        let taken = self.buffers.lock().expect("buffer lock").take(BufferKind::Activations, size, false);
        let buffer = match taken {
            Some(b) => {
                let mut pending = self.pending.lock().expect("encoder lock");
                let enc = pending.get_or_insert_with(|| self.open_encoder());
                enc.clear_buffer(&b, 0, None);
                b
            }
            None => {
                self.buffers.lock().expect("buffer lock").trim(BufferKind::Activations);
                self.create(BufferKind::Activations, "activations", size, Self::STORAGE)
            }
        };
        self.wrap(buffer, len, BufferKind::Activations)
    }

    /// A uniform buffer holding `params`, a kernel's `#[repr(C)]` mirror of its WGSL uniform
    /// struct (which carries its own padding to the 16-byte rows uniforms are read in). Pooled
    /// like a pass's inputs: after the first pass of a shape, no dispatch creates one.
    pub(crate) fn uniform(&self, params: &impl bytemuck::Pod) -> Uniform {
        let bytes = bytemuck::bytes_of(params);
        let size = bytes.len() as u64;
        let taken = self.buffers.lock().expect("buffer lock").take(BufferKind::Uniforms, size, true);
        let buffer = taken.unwrap_or_else(|| {
            self.create(
                BufferKind::Uniforms,
                "params",
                size,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        Uniform { buffer, owner: self.buffers.clone() }
    }

    /// Runs `pipeline` once with `bindings` at bindings 0.. of group 0.
    pub(crate) fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut pending = self.pending.lock().expect("encoder lock");
        let enc = pending.get_or_insert_with(|| self.open_encoder());
        // One pass per dispatch: wgpu orders passes and inserts the barriers between them.
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    pub(crate) fn pipeline(&self, label: &str, wgsl: &str) -> wgpu::ComputePipeline {
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
        self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
    }

    /// Copies a buffer back to the CPU.
    pub async fn download_f32(&self, b: &GpuBuffer) -> Result<Vec<f32>> {
        let size = (b.len * 4) as u64;
        let staging = self.create(
            BufferKind::Staging,
            "readback",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        // Destroyed and uncounted when this returns, on error too.
        let staging = self.wrap(staging, b.len, BufferKind::Staging);
        {
            // As in `flush`: taken and submitted under the encoder lock.
            let mut pending = self.pending.lock().expect("encoder lock");
            let mut enc = pending.take().unwrap_or_else(|| self.open_encoder());
            enc.copy_buffer_to_buffer(&b.buffer, 0, &staging.buffer, 0, size);
            self.submit(Some(enc.finish()));
        }
        let slice = staging.buffer.slice(..);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await.map_err(|e| GpuError::Readback(e.to_string()))?.map_err(|e| GpuError::Readback(e.to_string()))?;
        let view = slice.get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        staging.buffer.unmap();
        if let Some(e) = self.device_error.lock().expect("error slot").take() {
            return Err(GpuError::Device(e));
        }
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn download_f32_blocking(&self, b: &GpuBuffer) -> Result<Vec<f32>> {
        pollster::block_on(self.download_f32(b))
    }
}
