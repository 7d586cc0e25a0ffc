//! The device, buffers and dispatch.

use wgpu::util::DeviceExt;

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

/// A storage buffer of `len` 32-bit elements.
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub len: usize,
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

    /// Submits what was recorded.
    pub fn flush(&self) {
        let pending = self.pending.lock().expect("encoder lock").take();
        if let Some(enc) = pending {
            self.queue.submit([enc.finish()]);
        }
    }

    fn storage(&self, label: &str, bytes: &[u8], len: usize) -> GpuBuffer {
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        GpuBuffer { buffer, len }
    }

    pub fn upload_f32(&self, data: &[f32]) -> GpuBuffer {
        self.storage("f32", bytemuck::cast_slice(data), data.len())
    }

    pub fn upload_u32(&self, data: &[u32]) -> GpuBuffer {
        self.storage("u32", bytemuck::cast_slice(data), data.len())
    }

    /// `len` zeroed 32-bit elements.
    pub fn zeros(&self, len: usize) -> GpuBuffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("zeros"),
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        GpuBuffer { buffer, len }
    }

    /// A uniform buffer holding `params`, a kernel's `#[repr(C)]` mirror of its WGSL uniform
    /// struct (which carries its own padding to the 16-byte rows uniforms are read in).
    pub(crate) fn uniform(&self, params: &impl bytemuck::Pod) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
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
        let enc = pending
            .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
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
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .pending
            .lock()
            .expect("encoder lock")
            .take()
            .unwrap_or_else(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
        enc.copy_buffer_to_buffer(&b.buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
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
        staging.unmap();
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
