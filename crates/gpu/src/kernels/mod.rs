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

/// How a weight matrix is stored on the GPU; the matmul dequantizes inside the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    /// IEEE half floats, two per 32-bit word.
    F16,
    /// ggml's Q8_0: 32 weights share one scale, 8-bit quants.
    Q8_0,
    /// ggml's Q4_0: 32 weights share one scale, 4-bit quants.
    Q4_0,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    /// Bytes of one row of `k` weights in the data buffer (the largest of the format's buffers).
    pub fn row_bytes(self, k: usize) -> u64 {
        (match self {
            Self::F32 => k * 4,
            Self::F16 => k * 2,
            Self::Q8_0 => k,
            Self::Q4_0 => k / 2,
        }) as u64
    }

    /// Whether rows of `k` weights can be stored in this format.
    pub fn fits_rows(self, k: usize) -> bool {
        match self {
            Self::F32 => true,
            Self::F16 => k.is_multiple_of(2),
            Self::Q8_0 | Self::Q4_0 => k.is_multiple_of(32),
        }
    }
}

/// A `[n, k]` weight matrix on the GPU in one [`WeightFormat`]: data words, plus one f32 scale
/// per block of 32 for the quantized formats.
pub struct GpuMatrix {
    pub format: WeightFormat,
    pub data: GpuBuffer,
    pub scales: Option<GpuBuffer>,
    pub n: usize,
    pub k: usize,
}

/// f32 weights encoded in a format, as (data words, scales) the way the GPU holds them.
pub fn encode_weights(format: WeightFormat, w: &[f32], n: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    if w.len() != n * k {
        return Err(GpuError::Shape(format!("{} values for a [{n}, {k}] matrix", w.len())));
    }
    if !format.fits_rows(k) {
        return Err(GpuError::Shape(format!("{} needs rows that are multiples of 32 (got [{n}, {k}])", format.name())));
    }
    Ok(match format {
        WeightFormat::F32 => (bytemuck::cast_slice(w).to_vec(), vec![]),
        WeightFormat::F16 => {
            let words = w
                .chunks(2)
                .map(|p| {
                    let lo = half::f16::from_f32(p[0]).to_bits() as u32;
                    let hi = half::f16::from_f32(p[1]).to_bits() as u32;
                    lo | (hi << 16)
                })
                .collect();
            (words, vec![])
        }
        WeightFormat::Q8_0 => quantize_q8_0(w, n, k)?,
        WeightFormat::Q4_0 => quantize_q4_0(w, n, k)?,
    })
}

/// The f32 weights the kernel sees for `format` (the CPU reference for tests and error bounds).
pub fn decoded_weights(format: WeightFormat, w: &[f32], n: usize, k: usize) -> Result<Vec<f32>> {
    let (data, scales) = encode_weights(format, w, n, k)?;
    let bytes: Vec<u8> = data.iter().flat_map(|d| d.to_le_bytes()).collect();
    Ok(match format {
        WeightFormat::F32 => w.to_vec(),
        WeightFormat::F16 => {
            bytes.chunks(2).map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
        }
        WeightFormat::Q8_0 => bytes.iter().enumerate().map(|(i, &q)| q as i8 as f32 * scales[i / 32]).collect(),
        WeightFormat::Q4_0 => (0..n * k)
            .map(|i| {
                let (block, j) = (i / 32, i % 32);
                let byte = bytes[block * 16 + j % 16];
                let nibble = if j < 16 { byte & 0xf } else { byte >> 4 };
                (nibble as f32 - 8.0) * scales[block]
            })
            .collect(),
    })
}

/// Quantizes `[n, k]` weights to Q8_0 the way ggml does (scale = max|w| / 127 kept as f16,
/// round to nearest): (packed quants, scales).
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
        // ggml keeps the scale as f16 (the quants are computed from the unrounded one).
        scales.push(half::f16::from_f32(d).to_f32());
        bytes.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    let quants = bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((quants, scales))
}

/// Quantizes `[n, k]` weights to Q4_0 the way ggml does (scale = the signed value of largest
/// magnitude / -8, quant = min(15, trunc(w / scale + 8.5))): (packed quants, scales).
pub fn quantize_q4_0(w: &[f32], n: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    if !k.is_multiple_of(32) || w.len() != n * k {
        return Err(GpuError::Shape(format!("Q4_0 needs rows that are multiples of 32 (got [{n}, {k}])")));
    }
    let mut bytes = Vec::with_capacity(w.len() / 2);
    let mut scales = Vec::with_capacity(w.len() / 32);
    for block in w.chunks(32) {
        let max = block.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        scales.push(half::f16::from_f32(d).to_f32());
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        bytes.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
    }
    let quants = bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((quants, scales))
}

impl GpuMatrix {
    /// Encodes `[n, k]` f32 weights in `format` and uploads them as one matrix.
    pub fn upload(gpu: &Gpu, format: WeightFormat, w: &[f32], n: usize, k: usize) -> Result<Self> {
        let (data, scales) = encode_weights(format, w, n, k)?;
        Ok(Self::from_encoded(gpu, format, &data, &scales, n, k))
    }

    fn from_encoded(gpu: &Gpu, format: WeightFormat, data: &[u32], scales: &[f32], n: usize, k: usize) -> Self {
        let scales = (!scales.is_empty()).then(|| gpu.upload_f32(scales));
        Self { format, data: gpu.upload_u32(data), scales, n, k }
    }

    /// Uploads `[n, k]` weights as consecutive row blocks, each within the device's largest
    /// storage binding (a vocabulary-sized matrix can exceed it).
    pub fn upload_split(gpu: &Gpu, format: WeightFormat, w: &[f32], n: usize, k: usize) -> Result<Vec<Self>> {
        let rows = split_rows(gpu, format.row_bytes(k), n, &format!("a [{n}, {k}] {} matrix", format.name()))?;
        let mut out = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let r = rows.min(n - r0);
            out.push(Self::upload(gpu, format, &w[r0 * k..(r0 + r) * k], r, k)?);
            r0 += r;
        }
        Ok(out)
    }

    /// Bytes held on the GPU.
    pub fn bytes(&self) -> u64 {
        (self.data.len + self.scales.as_ref().map_or(0, |s| s.len)) as u64 * 4
    }
}

/// Rows of `row_bytes` that fit one binding.
pub fn split_rows(gpu: &Gpu, row_bytes: u64, n: usize, what: &str) -> Result<usize> {
    let rows = (gpu.max_binding / row_bytes.max(1)) as usize;
    if rows == 0 {
        return Err(GpuError::Shape(format!(
            "{what}: one row of {row_bytes} bytes exceeds the device's largest storage binding of {} bytes",
            gpu.max_binding
        )));
    }
    Ok(rows.min(n.max(1)))
}

/// `y[m, col0 + n] = x[m, k] · w[n, k]ᵀ` for every [`WeightFormat`]: one tiled kernel with the
/// format's `weight(n, k)` prepended (WGSL has no includes).
pub struct Matmul {
    f32: wgpu::ComputePipeline,
    f16: wgpu::ComputePipeline,
    q8_0: wgpu::ComputePipeline,
    q4_0: wgpu::ComputePipeline,
}

impl Matmul {
    pub fn new(gpu: &Gpu) -> Self {
        let body = include_str!("matmul.wgsl");
        let build = |label: &str, weights: &str| gpu.pipeline(label, &format!("{weights}\n{body}"));
        let f16 = if gpu.shader_f16 {
            build("matmul_f16_native", include_str!("weights_f16_native.wgsl"))
        } else {
            build("matmul_f16", include_str!("weights_f16.wgsl"))
        };
        Self {
            f32: build("matmul_f32", include_str!("weights_f32.wgsl")),
            f16,
            q8_0: build("matmul_q8_0", include_str!("weights_q8_0.wgsl")),
            q4_0: build("matmul_q4_0", include_str!("weights_q4_0.wgsl")),
        }
    }

    /// Writes `y[r, col0..col0 + w.n]` (rows of `ldy` values) for the `m` rows of `x`.
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        w: &GpuMatrix,
        y: &GpuBuffer,
        m: usize,
        ldy: usize,
        col0: usize,
    ) -> Result<()> {
        let (n, k) = (w.n, w.k);
        check("matmul x", x, m * k)?;
        if col0 + n > ldy {
            return Err(GpuError::Shape(format!("matmul: columns {col0}..{} past a row of {ldy}", col0 + n)));
        }
        check("matmul y", y, m * ldy)?;
        let p = gpu.uniform(&[m as u32, n as u32, k as u32, ldy as u32, col0 as u32, 0, 0, 0]);
        let groups = (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1);
        let pipeline = match w.format {
            WeightFormat::F32 => &self.f32,
            WeightFormat::F16 => &self.f16,
            WeightFormat::Q8_0 => &self.q8_0,
            WeightFormat::Q4_0 => &self.q4_0,
        };
        match &w.scales {
            Some(s) => gpu.dispatch(pipeline, &[&x.buffer, &w.data.buffer, &y.buffer, &p, &s.buffer], groups),
            None => gpu.dispatch(pipeline, &[&x.buffer, &w.data.buffer, &y.buffer, &p], groups),
        }
        Ok(())
    }
}

/// RMSNorm over rows of `dim` (Qwen3's per-head q/k norm is rows = tokens x heads, dim = head_dim).
/// The sum of squares is reduced with subgroup operations where the device has them.
pub struct RmsNorm(wgpu::ComputePipeline);

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> Self {
        if gpu.subgroups {
            // Browsers (Tint) require the enable directive; naga rejects it and needs only the
            // device feature.
            let enable = if cfg!(target_arch = "wasm32") { "enable subgroups;\n" } else { "" };
            Self(gpu.pipeline("rms_norm_subgroup", &format!("{enable}{}", include_str!("rms_norm_subgroup.wgsl"))))
        } else {
            Self(gpu.pipeline("rms_norm", include_str!("rms_norm.wgsl")))
        }
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
    rope_tables_at(inv_freq, offset..offset + tokens)
}

/// cos and sin tables for any positions (packed sequences restart at 0).
pub fn rope_tables_at(inv_freq: &[f32], positions: impl ExactSizeIterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(positions.len() * inv_freq.len());
    let mut sin = Vec::with_capacity(positions.len() * inv_freq.len());
    for pos in positions {
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

/// Token embedding lookup from a table split into row chunks ([`GpuMatrix::upload_split`] in
/// f32): one dispatch per chunk, each writing the tokens whose ids fall in it.
pub struct Embedding(wgpu::ComputePipeline);

impl Embedding {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("embedding", include_str!("embedding.wgsl")))
    }
    pub fn run(&self, gpu: &Gpu, chunks: &[GpuMatrix], ids: &GpuBuffer, y: &GpuBuffer) -> Result<()> {
        let Some(dim) = chunks.first().map(|c| c.k) else {
            return Err(GpuError::Shape("embedding: no table".into()));
        };
        check("embedding y", y, ids.len * dim)?;
        let mut row0 = 0;
        for c in chunks {
            if c.format != WeightFormat::F32 || c.k != dim {
                return Err(GpuError::Shape("embedding chunks must be f32 rows of one width".into()));
            }
            let p = gpu.uniform(&[ids.len as u32, dim as u32, c.n as u32, row0 as u32]);
            gpu.dispatch(&self.0, &[&c.data.buffer, &ids.buffer, &y.buffer, &p], groups_1d(ids.len * dim, 64));
            row0 += c.n;
        }
        Ok(())
    }
}

/// Causal grouped-query attention for prefill over packed sequences (`starts[t]`: the first
/// token of t's sequence; the first `shared` tokens, if any, a prompt that every later sequence
/// continues): key tiles of 64, an online softmax.
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
        starts: &GpuBuffer,
        shared: usize,
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
        check("attention starts", starts, tokens)?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let p = gpu.uniform(&[
            tokens as u32,
            heads as u32,
            kv_heads as u32,
            head_dim as u32,
            scale.to_bits(),
            shared as u32,
            0,
            0,
        ]);
        let n = tokens * heads;
        let groups = (n.min(65_535) as u32, n.div_ceil(65_535) as u32, 1);
        gpu.dispatch(&self.0, &[&q.buffer, &k.buffer, &v.buffer, &out.buffer, &starts.buffer, &p], groups);
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
