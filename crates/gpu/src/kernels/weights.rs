//! Weight matrices on the GPU: the storage formats the matmul dequantizes, their CPU encoders
//! (ggml's quantizers), and matrices split to the device's largest storage binding.

use crate::context::{Gpu, GpuBuffer, GpuError, Result};

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

/// Two f16 values (their bits) in one 32-bit word, the first in the low half: how the f16
/// format and the f16 embedding table are stored.
fn f16_word(lo: u16, hi: u16) -> u32 {
    lo as u32 | ((hi as u32) << 16)
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
                .map(|p| f16_word(half::f16::from_f32(p[0]).to_bits(), half::f16::from_f32(p[1]).to_bits()))
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
        let scales = (!scales.is_empty()).then(|| gpu.upload_weights_f32(scales));
        Self { format, data: gpu.upload_weights(data), scales, n, k }
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

    /// Uploads `[n, k]` weights given as f16 bits, split like [`Self::upload_split`] and read
    /// `piece` rows at a time through `rows` (the bits of rows `r`), each piece written before
    /// the next is read: a vocabulary-sized table goes up without a host copy in f32, and in a
    /// page without passing whole through the worker's wasm heap (which keeps its high-water
    /// mark: 2 × 311 MB for the 0.6B's table read whole).
    pub fn upload_f16_rows(
        gpu: &Gpu,
        n: usize,
        k: usize,
        piece: usize,
        mut rows: impl FnMut(std::ops::Range<usize>) -> Result<Vec<u16>>,
    ) -> Result<Vec<Self>> {
        let format = WeightFormat::F16;
        if !format.fits_rows(k) {
            return Err(GpuError::Shape(format!("an f16 [{n}, {k}] matrix needs an even row length")));
        }
        let per_block = split_rows(gpu, format.row_bytes(k), n, &format!("a [{n}, {k}] f16 matrix"))?;
        let mut out = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let block = per_block.min(n - r0);
            let mut upload = gpu.begin_weights(block * k / 2);
            let mut p0 = r0;
            while p0 < r0 + block {
                let p = piece.max(1).min(r0 + block - p0);
                let bits = rows(p0..p0 + p)?;
                if bits.len() != p * k {
                    return Err(GpuError::Shape(format!("{} f16 values for {p} rows of {k}", bits.len())));
                }
                let words: Vec<u32> = bits.chunks(2).map(|w| f16_word(w[0], w[1])).collect();
                upload.write(bytemuck::cast_slice(&words));
                p0 += p;
            }
            out.push(Self { format, data: upload.finish(), scales: None, n: block, k });
            r0 += block;
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
