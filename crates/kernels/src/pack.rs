//! Weights repacked for the kernels: int8 column panels, scales per group, column sums.

use crate::aligned::Aligned;
use crate::Int8Error;

/// Columns per panel (two v128 of 4 columns × 4 K values).
pub const NR: usize = 8;
/// K values per dot step (one i32 lane of a v128).
pub const KSTEP: usize = 4;
/// Panels stored step by step together: 2 on x86-64, where a pair's step is the 64-byte row of
/// an AMX weight tile (16 columns × 4 K values) and one 512-bit load for AVX-512 VNNI; 1
/// elsewhere.
pub(crate) const PAIR: usize = if cfg!(target_arch = "x86_64") { 2 } else { 1 };
/// Bytes from one step of a panel to its next.
pub(crate) const STEP_BYTES: usize = PAIR * NR * KSTEP;

/// Where the weight scales change along K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleLayout {
    /// One scale per output channel: i32 sums over the whole row.
    PerChannel,
    /// One scale per output channel and group of this many K values (32: Q8_0's blocks).
    PerGroup(usize),
}

impl ScaleLayout {
    pub fn name(self) -> String {
        match self {
            Self::PerChannel => "per-channel".into(),
            Self::PerGroup(g) => format!("per-group({g})"),
        }
    }
}

/// A weight matrix `[n out, k in]` as the kernels read it.
///
/// Layout: panel `p` holds columns `8p..8p+8`; within it, step `s` (K values `4s..4s+4`) is 32
/// bytes, column `j`'s four values at `4j..4j+4`, so one v128 load gives 4 columns × 4 K values,
/// the shape of an i32x4 dot. On x86-64 the steps of panels `2q` and `2q + 1` alternate
/// ([`PAIR`]): step `s` of the pair is 64 bytes, an AMX weight tile's row. K is padded with zeros
/// to a whole number of groups, N to whole panels (whole pairs on x86-64; padding columns have
/// zero scales and are never written out).
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// K padded to whole groups.
    pub(crate) kp: usize,
    /// K values per scale group (`kp` for per-channel).
    pub(crate) group: usize,
    pub(crate) layout: ScaleLayout,
    pub(crate) panels: usize,
    /// On a 64-byte boundary, as AMX's weight tiles load it.
    pub(crate) data: Aligned<i8>,
    /// `[panel][group][NR]`: a panel's scales in the order its tiles read them.
    pub(crate) scales: Vec<f32>,
    /// `[panels * NR]`: `Σ_g scale[g] · Σ_{k∈g} w[k]` per column, the zero-point correction
    /// applied once per output instead of once per group.
    pub(crate) zero_corr: Vec<f32>,
    /// `[panel][group][NR]`: `128 · Σ_{k∈g} w[k]`, what VNNI's activations offset by +128 add to
    /// a group's i32 sum (x86-64 only; empty elsewhere).
    pub(crate) offset_corr: Vec<i32>,
}

impl PackedMatrix {
    /// Quantizes `w` (row-major `[n, k]`, f32) symmetrically to int8 with `layout`'s scales.
    pub fn pack(w: &[f32], n: usize, k: usize, layout: ScaleLayout) -> Result<Self, Int8Error> {
        if w.len() != n * k {
            return Err(Int8Error::Size { n, k, got: w.len(), want: n * k });
        }
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            return Err(Int8Error::NonFinite { row: i / k.max(1), col: i % k.max(1) });
        }
        let mut m = Self::empty(n, k, layout)?;
        let groups = m.kp / m.group;
        let mut q = vec![0i8; m.kp];
        for row in 0..n {
            let src = &w[row * k..(row + 1) * k];
            for g in 0..groups {
                let (a, b) = (g * m.group, ((g + 1) * m.group).min(k));
                let max = src.get(a..b).map_or(0.0, |s| s.iter().fold(0.0f32, |m, v| m.max(v.abs())));
                let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
                for (i, slot) in q[g * m.group..(g + 1) * m.group].iter_mut().enumerate() {
                    let idx = a + i;
                    *slot =
                        if idx < k && scale > 0.0 { (src[idx] / scale).round().clamp(-127.0, 127.0) as i8 } else { 0 };
                }
                m.set_scale(g, row, scale);
            }
            m.put_row(row, &q);
        }
        Ok(m)
    }

    /// From ggml Q8_0 bytes (`n` rows of `k / 32` blocks: an f16 scale, little endian, then 32
    /// int8 values). `PerGroup(32)` keeps the file's values and scales exactly; other layouts
    /// requantize the dequantized weights.
    pub fn pack_q8_0(raw: &[u8], n: usize, k: usize, layout: ScaleLayout) -> Result<Self, Int8Error> {
        const BLOCK: usize = 34;
        let want = n * (k / 32) * BLOCK;
        if !k.is_multiple_of(32) || raw.len() != want {
            return Err(Int8Error::Q8Size { rows: n, k, got: raw.len(), want });
        }
        if layout != ScaleLayout::PerGroup(32) {
            let mut w = Vec::with_capacity(n * k);
            for block in raw.chunks_exact(BLOCK) {
                let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                w.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
            }
            return Self::pack(&w, n, k, layout);
        }
        let mut m = Self::empty(n, k, layout)?;
        let mut q = vec![0i8; m.kp];
        for row in 0..n {
            let blocks = &raw[row * (k / 32) * BLOCK..(row + 1) * (k / 32) * BLOCK];
            for (g, block) in blocks.chunks_exact(BLOCK).enumerate() {
                let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                if !d.is_finite() {
                    return Err(Int8Error::NonFinite { row, col: g * 32 });
                }
                for (slot, &b) in q[g * 32..(g + 1) * 32].iter_mut().zip(&block[2..]) {
                    *slot = b as i8;
                }
                m.set_scale(g, row, d);
            }
            m.put_row(row, &q);
        }
        Ok(m)
    }

    fn empty(n: usize, k: usize, layout: ScaleLayout) -> Result<Self, Int8Error> {
        let group = match layout {
            ScaleLayout::PerChannel => k.div_ceil(KSTEP).max(1) * KSTEP,
            ScaleLayout::PerGroup(g) if g > 0 && g.is_multiple_of(KSTEP) => g,
            ScaleLayout::PerGroup(g) => return Err(Int8Error::Group(g)),
        };
        let kp = k.div_ceil(group).max(1) * group;
        let panels = n.div_ceil(NR);
        let groups = kp / group;
        Ok(Self {
            n,
            k,
            kp,
            group,
            layout,
            panels,
            data: Aligned::zeroed(panels.div_ceil(PAIR) * PAIR * NR * kp),
            scales: vec![0.0; groups * panels * NR],
            zero_corr: vec![0.0; panels * NR],
            offset_corr: vec![0; if cfg!(target_arch = "x86_64") { groups * panels * NR } else { 0 }],
        })
    }

    /// Where panel `p`'s first step starts in `data`; its steps are [`STEP_BYTES`] apart.
    #[allow(clippy::modulo_one)] // PAIR is 1 off x86-64
    pub(crate) fn panel_start(&self, p: usize) -> usize {
        (p / PAIR) * PAIR * NR * self.kp + (p % PAIR) * NR * KSTEP
    }

    /// Index of (group `g`, output channel `row`) in `scales`.
    pub(crate) fn scale_at(&self, g: usize, row: usize) -> usize {
        (row / NR) * (self.kp / self.group) * NR + g * NR + row % NR
    }

    fn set_scale(&mut self, g: usize, row: usize, scale: f32) {
        let at = self.scale_at(g, row);
        self.scales[at] = scale;
    }

    /// Stores output channel `row`'s int8 values (`kp` of them) into its panel; its scales must
    /// be set first (the zero-point correction uses them).
    fn put_row(&mut self, row: usize, q: &[i8]) {
        let (p, j) = (row / NR, row % NR);
        let base = self.panel_start(p);
        for (s, four) in q.chunks_exact(KSTEP).enumerate() {
            let at = base + s * STEP_BYTES + j * KSTEP;
            self.data[at..at + KSTEP].copy_from_slice(four);
        }
        let mut corr = 0.0f32;
        for g in 0..self.kp / self.group {
            let sum: i32 = q[g * self.group..(g + 1) * self.group].iter().map(|&v| v as i32).sum();
            corr += self.scales[self.scale_at(g, row)] * sum as f32;
            if !self.offset_corr.is_empty() {
                let at = self.scale_at(g, row);
                self.offset_corr[at] = 128 * sum;
            }
        }
        self.zero_corr[row] = corr;
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn layout(&self) -> ScaleLayout {
        self.layout
    }

    /// Bytes held (weights, scales and column sums).
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 4 * (self.scales.len() + self.zero_corr.len() + self.offset_corr.len())
    }

    /// The int8 value of output `row`, input `col` (`col < kp`).
    pub(crate) fn value(&self, row: usize, col: usize) -> i8 {
        let (p, j) = (row / NR, row % NR);
        let (s, t) = (col / KSTEP, col % KSTEP);
        self.data[self.panel_start(p) + s * STEP_BYTES + j * KSTEP + t]
    }

    /// `[n, k]` f32: what the kernels multiply by (the reference tests' weights).
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = Vec::with_capacity(self.n * self.k);
        for row in 0..self.n {
            for col in 0..self.k {
                let g = col / self.group;
                w.push(self.value(row, col) as f32 * self.scales[self.scale_at(g, row)]);
            }
        }
        w
    }
}

/// IEEE half → single (Q8_0's block scales).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalize.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn q8_0_blocks_keep_their_values_and_scales() {
        // Two rows of one block each: scale 0.5 (0x3800) and 2.0 (0x4000).
        let mut raw = Vec::new();
        for (scale, base) in [(0x3800u16, -16i8), (0x4000, 3)] {
            raw.extend(scale.to_le_bytes());
            raw.extend((0..32).map(|i| (base + i as i8) as u8));
        }
        let m = PackedMatrix::pack_q8_0(&raw, 2, 32, ScaleLayout::PerGroup(32)).unwrap();
        let w = m.dequantized();
        for i in 0..32 {
            assert_eq!(w[i], (-16 + i as i32) as f32 * 0.5);
            assert_eq!(w[32 + i], (3 + i as i32) as f32 * 2.0);
        }
        assert_eq!(m.zero_corr[0], 0.5 * (0..32).map(|i| -16 + i).sum::<i32>() as f32);
        assert!(PackedMatrix::pack_q8_0(&raw[1..], 2, 32, ScaleLayout::PerGroup(32)).is_err());
        assert!(PackedMatrix::pack_q8_0(&raw, 2, 30, ScaleLayout::PerGroup(32)).is_err());
        // Requantized per channel: within half a step of the file's values.
        let pc = PackedMatrix::pack_q8_0(&raw, 2, 32, ScaleLayout::PerChannel).unwrap().dequantized();
        for (row, (a, b)) in pc.chunks(32).zip(w.chunks(32)).enumerate() {
            let half_step = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0 / 2.0;
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= half_step * 1.001, "row {row}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        assert!(matches!(PackedMatrix::pack(&[1.0; 5], 2, 3, ScaleLayout::PerChannel), Err(Int8Error::Size { .. })));
        assert_eq!(PackedMatrix::pack(&[1.0; 6], 2, 3, ScaleLayout::PerGroup(6)).unwrap_err(), Int8Error::Group(6));
        let mut w = vec![1.0; 6];
        w[4] = f32::NAN;
        assert_eq!(
            PackedMatrix::pack(&w, 2, 3, ScaleLayout::PerChannel).unwrap_err(),
            Int8Error::NonFinite { row: 1, col: 1 }
        );
    }
}
