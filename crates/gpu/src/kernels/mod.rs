//! One WGSL kernel per op, each a type that owns its pipeline. Shapes are checked against the
//! buffers before anything is dispatched. Launch functions take the op's buffers and dims as
//! plain arguments, mirroring the shader's bindings.
#![allow(clippy::too_many_arguments)]

use crate::context::{Gpu, GpuBuffer, GpuError, Result};

fn check(what: &str, b: &GpuBuffer, want: usize) -> Result<()> {
    if b.len < want {
        return Err(GpuError::Shape(format!("{what}: buffer of {} elements, needs {want}", b.len)));
    }
    Ok(())
}

/// Workgroups for `n` invocations of `size`, split over y past the 65,535 limit of x (the
/// shaders rebuild the index as x + y * 65535 * size).
fn groups_1d(n: usize, size: usize) -> (u32, u32, u32) {
    let total = n.div_ceil(size).max(1);
    if total <= 65_535 {
        (total as u32, 1, 1)
    } else {
        (65_535, total.div_ceil(65_535) as u32, 1)
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with f32 weights.
pub struct Matmul(wgpu::ComputePipeline);

impl Matmul {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("matmul", include_str!("matmul.wgsl")))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        w: &GpuBuffer,
        y: &GpuBuffer,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        check("matmul x", x, m * k)?;
        check("matmul w", w, n * k)?;
        check("matmul y", y, m * n)?;
        let p = gpu.uniform(&[m as u32, n as u32, k as u32, 0]);
        gpu.dispatch(
            &self.0,
            &[&x.buffer, &w.buffer, &y.buffer, &p],
            (n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1),
        );
        Ok(())
    }
}

/// Weights in Q8_0 blocks on the GPU: 32 weights share one f32 scale; quants packed 4 per u32.
pub struct Q8_0Weights {
    pub quants: GpuBuffer,
    pub scales: GpuBuffer,
    pub n: usize,
    pub k: usize,
}

/// Quantizes `[n, k]` weights to Q8_0 the way ggml does (scale = max|w| / 127, round to
/// nearest): (packed quants, scales).
pub fn quantize_q8_0(w: &[f32], n: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    if !k.is_multiple_of(32) || w.len() != n * k {
        return Err(GpuError::Shape(format!("Q8_0 needs rows that are multiples of 32 (got [{n}, {k}])")));
    }
    let mut bytes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / 32);
    for block in w.chunks(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        scales.push(d);
        bytes.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    let quants = bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((quants, scales))
}

impl Q8_0Weights {
    pub fn upload(gpu: &Gpu, quants: &[u32], scales: &[f32], n: usize, k: usize) -> Result<Self> {
        if quants.len() * 4 != n * k || scales.len() * 32 != n * k {
            return Err(GpuError::Shape(format!("Q8_0 data does not match [{n}, {k}]")));
        }
        Ok(Self { quants: gpu.upload_u32(quants), scales: gpu.upload_f32(scales), n, k })
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with Q8_0 weights dequantized inside the kernel.
pub struct MatmulQ8_0(wgpu::ComputePipeline);

impl MatmulQ8_0 {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("matmul_q8_0", include_str!("matmul_q8_0.wgsl")))
    }
    pub fn run(&self, gpu: &Gpu, x: &GpuBuffer, w: &Q8_0Weights, y: &GpuBuffer, m: usize) -> Result<()> {
        let (n, k) = (w.n, w.k);
        check("matmul_q8_0 x", x, m * k)?;
        check("matmul_q8_0 y", y, m * n)?;
        let p = gpu.uniform(&[m as u32, n as u32, k as u32, 0]);
        let b = [&x.buffer, &w.quants.buffer, &w.scales.buffer, &y.buffer, &p];
        gpu.dispatch(&self.0, &b, (n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1));
        Ok(())
    }
}

/// RMSNorm over rows of `dim` (Qwen3's per-head q/k norm is rows = tokens x heads, dim = head_dim).
pub struct RmsNorm(wgpu::ComputePipeline);

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("rms_norm", include_str!("rms_norm.wgsl")))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        y: &GpuBuffer,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        check("rms_norm x", x, rows * dim)?;
        check("rms_norm weight", weight, dim)?;
        check("rms_norm y", y, rows * dim)?;
        let p = gpu.uniform(&[rows as u32, dim as u32, eps.to_bits(), 0]);
        let groups = (rows.min(65_535) as u32, rows.div_ceil(65_535) as u32, 1);
        gpu.dispatch(&self.0, &[&x.buffer, &weight.buffer, &y.buffer, &p], groups);
        Ok(())
    }
}

/// Rotary embedding in place on `[tokens, heads, head_dim]`.
pub struct Rope(wgpu::ComputePipeline);

/// `1 / theta^(2i / head_dim)` (unscaled; models take theirs from `ModelConfig::rope_inv_freq`).
pub fn inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2).map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect()
}

/// cos and sin tables `[tokens, head_dim/2]` for positions `offset..offset + tokens`, in f32
/// like transformers.
pub fn rope_tables(inv_freq: &[f32], offset: usize, tokens: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(tokens * inv_freq.len());
    let mut sin = Vec::with_capacity(tokens * inv_freq.len());
    for pos in offset..offset + tokens {
        for f in inv_freq {
            let a = pos as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

impl Rope {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("rope", include_str!("rope.wgsl")))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        cos: &GpuBuffer,
        sin: &GpuBuffer,
        tokens: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        check("rope x", x, tokens * heads * head_dim)?;
        check("rope cos", cos, tokens * head_dim / 2)?;
        check("rope sin", sin, tokens * head_dim / 2)?;
        let p = gpu.uniform(&[tokens as u32, heads as u32, head_dim as u32, 0]);
        gpu.dispatch(&self.0, &[&x.buffer, &cos.buffer, &sin.buffer, &p], groups_1d(tokens * heads * head_dim / 2, 64));
        Ok(())
    }
}

macro_rules! elementwise {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(wgpu::ComputePipeline);

        impl $name {
            pub fn new(gpu: &Gpu) -> Self {
                Self(gpu.pipeline($file, include_str!($file)))
            }
            pub fn run(&self, gpu: &Gpu, a: &GpuBuffer, b: &GpuBuffer, y: &GpuBuffer, len: usize) -> Result<()> {
                check(concat!($file, " a"), a, len)?;
                check(concat!($file, " b"), b, len)?;
                check(concat!($file, " y"), y, len)?;
                let p = gpu.uniform(&[len as u32, 0, 0, 0]);
                gpu.dispatch(&self.0, &[&a.buffer, &b.buffer, &y.buffer, &p], groups_1d(len, 64));
                Ok(())
            }
        }
    };
}

elementwise!(SwiGlu, "swiglu.wgsl", "`y = silu(gate) * up` (the MLP activation).");
elementwise!(Add, "add.wgsl", "`y = a + b` (residual connections).");

/// Token embedding lookup.
pub struct Embedding(wgpu::ComputePipeline);

impl Embedding {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("embedding", include_str!("embedding.wgsl")))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        table: &GpuBuffer,
        ids: &GpuBuffer,
        y: &GpuBuffer,
        vocab: usize,
        dim: usize,
    ) -> Result<()> {
        check("embedding table", table, vocab * dim)?;
        check("embedding y", y, ids.len * dim)?;
        let p = gpu.uniform(&[ids.len as u32, dim as u32, vocab as u32, 0]);
        gpu.dispatch(&self.0, &[&table.buffer, &ids.buffer, &y.buffer, &p], groups_1d(ids.len * dim, 64));
        Ok(())
    }
}

/// Causal grouped-query attention for prefill: key tiles of 64, an online softmax.
pub struct Attention(wgpu::ComputePipeline);

impl Attention {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("attention", include_str!("attention.wgsl")))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        out: &GpuBuffer,
        tokens: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        if head_dim > 256 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(GpuError::Shape(format!("attention: {heads} heads / {kv_heads} kv heads of {head_dim}")));
        }
        check("attention q", q, tokens * heads * head_dim)?;
        check("attention k", k, tokens * kv_heads * head_dim)?;
        check("attention v", v, tokens * kv_heads * head_dim)?;
        check("attention out", out, tokens * heads * head_dim)?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let p = gpu.uniform(&[tokens as u32, heads as u32, kv_heads as u32, head_dim as u32, scale.to_bits(), 0, 0, 0]);
        let n = tokens * heads;
        let groups = (n.min(65_535) as u32, n.div_ceil(65_535) as u32, 1);
        gpu.dispatch(&self.0, &[&q.buffer, &k.buffer, &v.buffer, &out.buffer, &p], groups);
        Ok(())
    }
}

/// `y[r, :] += b` in place.
pub struct BiasAdd(wgpu::ComputePipeline);

impl BiasAdd {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("bias_add", include_str!("bias_add.wgsl")))
    }
    pub fn run(&self, gpu: &Gpu, y: &GpuBuffer, b: &GpuBuffer, rows: usize, cols: usize) -> Result<()> {
        check("bias_add y", y, rows * cols)?;
        check("bias_add b", b, cols)?;
        let p = gpu.uniform(&[rows as u32, cols as u32, 0, 0]);
        gpu.dispatch(&self.0, &[&y.buffer, &b.buffer, &p], groups_1d(rows * cols, 64));
        Ok(())
    }
}
