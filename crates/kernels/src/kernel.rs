//! The GEMM driver and its 4-row × 8-column microkernels.

use crate::pack::{PackedMatrix, KSTEP, NR};
use crate::quant::{quantize_groups, quantize_rows, Scratch};

/// Rows per register tile.
const MR: usize = 4;
/// Rows per block: their quantized activations (`kp` bytes each) stay in cache while every
/// weight panel passes over them. 64 in wasm (measured in Chromium); 512 on x86-64, where L2
/// holds 512 rows of up to 3,072 bytes and each weight matrix then streams from memory once per
/// 512 rows (a 512-token pass ran 8% faster than with 64 on Sapphire Rapids).
#[cfg(not(target_arch = "x86_64"))]
const ROW_BLOCK: usize = 64;
#[cfg(target_arch = "x86_64")]
const ROW_BLOCK: usize = 512;

/// Which microkernel a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Scalar code the compiler may vectorize (native builds).
    Portable,
    /// wasm32 simd128: `i32x4_dot_i16x8` on widened int8 weights and u8 activations.
    WasmSimd128,
    /// wasm32 relaxed-simd: `i32x4_relaxed_dot_i8x16_i7x16_add` on int8 weights and 7-bit activations.
    WasmRelaxedSimd,
    /// x86-64 AVX2 (chosen at run time): `vpmaddubsw` + `vpmaddwd` on |weights| and
    /// activations carrying the weights' signs, 8 columns per 256-bit register. Activations per
    /// row and scale group, symmetric (see [`Self::grouped`]).
    X86Avx2,
    /// x86-64 VNNI (chosen at run time; AVX-512 VNNI, else AVX-VNNI): `vpdpbusd` adds each
    /// lane's four u8 × i8 products straight into i32, one instruction per row and step, on
    /// activations per row and scale group offset by +128 (see [`Self::grouped`]).
    X86Vnni,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "int8 portable",
            Self::WasmSimd128 => "int8 simd128",
            Self::WasmRelaxedSimd => "int8 relaxed-simd",
            Self::X86Avx2 => "int8 avx2",
            Self::X86Vnni => match vnni() {
                Some(Vnni::Avx512) => "int8 avx512-vnni",
                _ => "int8 avx-vnni",
            },
        }
    }

    /// Activation steps across a row's range (the reference check's bound): 7 bits where the
    /// relaxed dot's second operand must keep its top bit clear, 8 for the other per-row
    /// kernels; the grouped ones step by `max|x| / 127` of a group, at most `(hi − lo) / 127` of
    /// the row.
    pub(crate) fn levels(self) -> u8 {
        match self {
            Self::WasmRelaxedSimd | Self::X86Avx2 | Self::X86Vnni => 127,
            _ => 255,
        }
    }

    /// Whether activations are quantized per row and weight scale group, symmetrically, each
    /// group's i32 sum scaled by its own activation scale (the x86-64 kernels), rather than per
    /// row with a zero point (wasm and portable). Per group is as fine as Candle's Q8_0
    /// activation blocks: per row scored the 0.6B shape less accurately than Candle. VNNI stores
    /// `q + 128` (its first operand is unsigned) and subtracts `128 · Σw` per group; AVX2 stores
    /// `q` and multiplies |w| (≤ 128) by `q` with w's sign (|·| ≤ 127), so `vpmaddubsw`'s i16
    /// pair sums stay within ±32,512, exact.
    pub(crate) fn grouped(self) -> bool {
        matches!(self, Self::X86Avx2 | Self::X86Vnni)
    }

    /// Every variant, for tests that run each one's arithmetic.
    pub const ALL: [Kernel; 5] =
        [Self::Portable, Self::WasmSimd128, Self::WasmRelaxedSimd, Self::X86Avx2, Self::X86Vnni];

    /// Whether this build on this CPU runs the variant's own microkernel (else it runs as
    /// portable code with the same quantization).
    pub fn runs_here(self) -> bool {
        match self {
            Self::Portable => true,
            Self::WasmSimd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            Self::WasmRelaxedSimd => cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")),
            Self::X86Avx2 => has_avx2(),
            Self::X86Vnni => vnni().is_some(),
        }
    }
}

/// The kernel this build (and, on x86-64, this CPU) runs.
pub fn kernel() -> Kernel {
    if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) {
        Kernel::WasmRelaxedSimd
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        Kernel::WasmSimd128
    } else if vnni().is_some() {
        Kernel::X86Vnni
    } else if has_avx2() {
        Kernel::X86Avx2
    } else {
        Kernel::Portable
    }
}

/// Whether this CPU runs the AVX2 microkernels (the feature test is cached by std).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The two encodings of `vpdpbusd` on 256-bit registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Vnni {
    /// EVEX, AVX-512 VNNI (with F, BW, DQ, VL: Ice Lake and later Xeons, Zen 4); pairs of panels
    /// in 512-bit registers.
    Avx512,
    /// VEX, AVX-VNNI (Alder Lake and later cores, Zen 5).
    Avx,
}

/// Which VNNI encoding this CPU runs, if any (the feature tests are cached by std).
fn vnni() -> Option<Vnni> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if !has_avx2() {
            None
        } else if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("avx512vnni") {
            Some(Vnni::Avx512)
        } else if has!("avxvnni") {
            Some(Vnni::Avx)
        } else {
            None
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `out[m, n] = x[m, k] · Wᵀ` with this build's kernel.
pub fn matmul(x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut Scratch) {
    matmul_with(kernel(), x, m, w, out, scratch)
}

/// As [`matmul`] with the arithmetic of `kernel`: a kernel this build lacks runs as portable code
/// with the same quantization, so native tests cover each variant's integer results exactly.
///
/// Panics if `x` is not `m × k` or `out` not `m × n` (a caller bug, not input data).
pub fn matmul_with(kernel: Kernel, x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut Scratch) {
    run(kernel, false, x, m, w, out, scratch)
}

/// As [`matmul_with`] with portable tiles whatever the CPU has: what the tests compare a
/// microkernel against.
#[cfg(test)]
pub(crate) fn matmul_portable(kernel: Kernel, x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], s: &mut Scratch) {
    run(kernel, true, x, m, w, out, s)
}

fn run(
    kernel: Kernel,
    portable_tiles: bool,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    assert_eq!(x.len(), m * w.k, "activations: {} values for {m} rows of {}", x.len(), w.k);
    assert_eq!(out.len(), m * w.n, "output: {} values for {m} rows of {}", out.len(), w.n);
    if m == 0 || w.n == 0 {
        return;
    }
    let (grouped, offset) = (kernel.grouped(), kernel == Kernel::X86Vnni);
    if grouped {
        quantize_groups(x, m, w.k, w.kp, w.group, offset, scratch);
    } else {
        quantize_rows(x, m, w.k, w.kp, kernel.levels(), kernel == Kernel::WasmSimd128, scratch);
    }
    let groups = w.kp / w.group;
    let panel = |p: usize| Panel {
        data: &w.data[p * NR * w.kp..(p + 1) * NR * w.kp],
        scales: &w.scales[p * groups * NR..(p + 1) * groups * NR],
        group_steps: w.group / KSTEP,
        corr: if offset { &w.offset_corr[p * groups * NR..(p + 1) * groups * NR] } else { &[] },
    };
    // AVX-512 VNNI multiplies two panels at once (16 columns in one 512-bit register).
    let pairs = !portable_tiles && kernel == Kernel::X86Vnni && vnni() == Some(Vnni::Avx512);
    for block in (0..m).step_by(ROW_BLOCK) {
        let block_end = (block + ROW_BLOCK).min(m);
        let mut p = 0;
        while p < w.panels {
            let width = if pairs && p + 1 < w.panels { 2 } else { 1 };
            // A pair of panels takes 8 rows a tile (`PAIR_ROWS`), a single panel 4.
            let tile_rows = if width == 2 { PAIR_ROWS } else { MR };
            for r0 in (block..block_end).step_by(tile_rows) {
                let rows = tile_rows.min(block_end - r0);
                // Missing rows of a ragged tile repeat the first; their results are dropped.
                let row_of = |i: usize| if i < rows { r0 + i } else { r0 };
                let mut emit = |p: usize, sums: &[[f32; NR]]| {
                    let corr = &w.zero_corr[p * NR..(p + 1) * NR];
                    let cols = NR.min(w.n - p * NR);
                    for (i, sum) in sums.iter().enumerate().take(rows) {
                        let r = r0 + i;
                        let dst = &mut out[r * w.n + p * NR..r * w.n + p * NR + cols];
                        if grouped {
                            dst.copy_from_slice(&sum[..cols]);
                            continue;
                        }
                        let (sa, za) = (scratch.scales[r], scratch.zeros[r] as f32);
                        for (j, o) in dst.iter_mut().enumerate() {
                            *o = sa * (sum[j] - za * corr[j]);
                        }
                    }
                };
                let rows_at = |i: usize| TileRow {
                    q: &scratch.q8[row_of(i) * w.kp..(row_of(i) + 1) * w.kp],
                    scales: if grouped {
                        &scratch.group_scales[row_of(i) * groups..(row_of(i) + 1) * groups]
                    } else {
                        &[]
                    },
                };
                if width == 2 {
                    let [a, b] = tile_pair(std::array::from_fn(rows_at), [&panel(p), &panel(p + 1)]);
                    emit(p, &a);
                    emit(p + 1, &b);
                } else {
                    let rows: [TileRow; MR] = std::array::from_fn(rows_at);
                    emit(p, &tile(kernel, portable_tiles, scratch, w.kp, &panel(p), rows, row_of));
                }
            }
            p += width;
        }
    }
}

/// Rows per tile of the AVX-512 VNNI pair microkernel.
const PAIR_ROWS: usize = 8;

/// One row of a tile: its quantized activations and, for grouped kernels, its group scales.
#[derive(Clone, Copy)]
struct TileRow<'a> {
    q: &'a [u8],
    scales: &'a [f32],
}

/// Two adjacent panels by the AVX-512 VNNI microkernel (only called where it runs).
#[allow(unused_variables)]
fn tile_pair(rows: [TileRow; PAIR_ROWS], panels: [&Panel; 2]) -> [[[f32; NR]; PAIR_ROWS]; 2] {
    #[cfg(target_arch = "x86_64")]
    if vnni() == Some(Vnni::Avx512) {
        // SAFETY: the CPU has AVX-512 VNNI (checked above).
        return unsafe { x86::avx512_vnni_pair(rows, panels) };
    }
    unreachable!("tile_pair runs only where AVX-512 VNNI does")
}

/// One panel of 8 output channels.
struct Panel<'a> {
    /// `kp × NR` int8 values, step-major.
    data: &'a [i8],
    /// `[group][NR]`
    scales: &'a [f32],
    /// Dot steps per scale group.
    group_steps: usize,
    /// `[group][NR]`: `128 · Σw` per group, for activations offset by +128 (else empty).
    corr: &'a [i32],
}

/// `sum[i][j] = Σ_g scale[g][j] · Σ_{k∈g} q[row_of(i)][k] · w[j][k]` for a 4-row tile: i32 within
/// a group, one f32 multiply-add per group (the zero point is corrected by the caller).
#[allow(unused_variables)]
fn tile(
    kernel: Kernel,
    portable_tiles: bool,
    s: &Scratch,
    kp: usize,
    panel: &Panel,
    rows: [TileRow; MR],
    row_of: impl Fn(usize) -> usize,
) -> [[f32; NR]; MR] {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if kernel == Kernel::WasmRelaxedSimd {
        let rows: [&[u8]; MR] = std::array::from_fn(|i| &s.q8[row_of(i) * kp..(row_of(i) + 1) * kp]);
        return wasm::relaxed(rows, panel);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if kernel == Kernel::WasmSimd128 {
        let rows: [&[u16]; MR] = std::array::from_fn(|i| &s.q16[row_of(i) * kp..(row_of(i) + 1) * kp]);
        return wasm::simd128(rows, panel);
    }
    #[cfg(target_arch = "x86_64")]
    if !portable_tiles {
        // SAFETY (each call): the CPU has the features the microkernel is compiled for.
        match (kernel, vnni()) {
            (Kernel::X86Avx2, _) if has_avx2() => return unsafe { x86::avx2(rows, panel) },
            (Kernel::X86Vnni, Some(Vnni::Avx512)) => return unsafe { x86::avx512_vnni(rows, panel) },
            (Kernel::X86Vnni, Some(Vnni::Avx)) => return unsafe { x86::avx_vnni(rows, panel) },
            _ => {}
        }
    }
    portable(rows, panel, kernel)
}

/// The arithmetic of every variant: per row (wasm, portable) or per group (x86-64; signed
/// bytes for AVX2, `q + 128` with the offset corrected per group for VNNI).
fn portable(rows: [TileRow; MR], panel: &Panel, kernel: Kernel) -> [[f32; NR]; MR] {
    let (grouped, offset) = (kernel.grouped(), kernel == Kernel::X86Vnni);
    let signed = grouped && !offset;
    let mut sum = [[0.0f32; NR]; MR];
    let group_bytes = panel.group_steps * NR * KSTEP;
    for (g, wg) in panel.data.chunks_exact(group_bytes).enumerate() {
        let mut acc = [[0i32; NR]; MR];
        for (step, w) in wg.chunks_exact(NR * KSTEP).enumerate() {
            let k0 = (g * panel.group_steps + step) * KSTEP;
            for (i, row) in rows.iter().enumerate() {
                let a = &row.q[k0..k0 + KSTEP];
                for j in 0..NR {
                    let wj = &w[j * KSTEP..j * KSTEP + KSTEP];
                    let value = |t: usize| if signed { a[t] as i8 as i32 } else { a[t] as i32 };
                    acc[i][j] += (0..KSTEP).map(|t| value(t) * wj[t] as i32).sum::<i32>();
                }
            }
        }
        let scale = &panel.scales[g * NR..(g + 1) * NR];
        for i in 0..MR {
            for j in 0..NR {
                if grouped {
                    // The microkernels' arithmetic: (i32 − offset) → f32, fused multiply-add by the
                    // weight scale × the row's group scale (test-only speed: baseline x86-64
                    // calls libm's fmaf).
                    let a = acc[i][j] - if offset { panel.corr[g * NR + j] } else { 0 };
                    sum[i][j] = (a as f32).mul_add(scale[j] * rows[i].scales[g], sum[i][j]);
                } else {
                    sum[i][j] += scale[j] * acc[i][j] as f32;
                }
            }
        }
    }
    sum
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{Panel, KSTEP, MR, NR};
    use core::arch::wasm32::*;

    /// Group `g`'s scales of the panel's 8 columns, as two halves.
    #[inline(always)]
    fn group_scales(panel: &Panel, g: usize) -> (v128, v128) {
        let scales = &panel.scales[g * NR..(g + 1) * NR];
        // SAFETY: `scales` is 8 f32, two unaligned v128 loads.
        unsafe {
            let p = scales.as_ptr() as *const v128;
            (v128_load(p), v128_load(p.add(1)))
        }
    }

    /// `acc · scale` added to `sum`, for every row's two column halves.
    #[inline(always)]
    fn scale_add(sum: &mut [v128; 2 * MR], acc: &[v128; 2 * MR], (s0, s1): (v128, v128)) {
        for i in 0..MR {
            sum[2 * i] = f32x4_add(sum[2 * i], f32x4_mul(f32x4_convert_i32x4(acc[2 * i]), s0));
            sum[2 * i + 1] = f32x4_add(sum[2 * i + 1], f32x4_mul(f32x4_convert_i32x4(acc[2 * i + 1]), s1));
        }
    }

    fn unpack(sum: [v128; 2 * MR]) -> [[f32; NR]; MR] {
        let mut out = [[0.0f32; NR]; MR];
        for (i, row) in out.iter_mut().enumerate() {
            // SAFETY: a row is 8 f32, two unaligned v128 stores.
            unsafe {
                let p = row.as_mut_ptr() as *mut v128;
                v128_store(p, sum[2 * i]);
                v128_store(p.add(1), sum[2 * i + 1]);
            }
        }
        out
    }

    /// Adds steps `s0..s0 + steps` of 4 rows × 8 columns to `acc`: per step of 4 K values, two
    /// weight loads (4 columns × 4 values each) serve all 4 rows, each row's 4 activations
    /// splatted across the lanes.
    ///
    /// SAFETY: `data` holds `(s0 + steps) * 32` bytes and each row `(s0 + steps) * 4`.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn relaxed_steps(acc: &mut [v128; 2 * MR], rows: &[&[u8]; MR], data: &[i8], s0: usize, steps: usize) {
        for s in s0..s0 + steps {
            // Unaligned v128 and 32-bit loads are allowed in wasm.
            let p = data.as_ptr().add(s * NR * KSTEP) as *const v128;
            let (w0, w1) = (v128_load(p), v128_load(p.add(1)));
            for i in 0..MR {
                let a = v128_load32_splat(rows[i].as_ptr().add(s * KSTEP) as *const u32);
                acc[2 * i] = i32x4_relaxed_dot_i8x16_i7x16_add(w0, a, acc[2 * i]);
                acc[2 * i + 1] = i32x4_relaxed_dot_i8x16_i7x16_add(w1, a, acc[2 * i + 1]);
            }
        }
    }

    #[cfg(target_feature = "relaxed-simd")]
    pub fn relaxed(rows: [&[u8]; MR], panel: &Panel) -> [[f32; NR]; MR] {
        let gs = panel.group_steps;
        let groups = panel.scales.len() / NR;
        assert!(panel.data.len() >= groups * gs * NR * KSTEP && rows.iter().all(|r| r.len() >= groups * gs * KSTEP));
        let mut sum = [f32x4_splat(0.0); 2 * MR];
        for g in 0..groups {
            let mut acc = [i32x4_splat(0); 2 * MR];
            // SAFETY: bounds asserted above.
            unsafe { relaxed_steps(&mut acc, &rows, panel.data, g * gs, gs) };
            scale_add(&mut sum, &acc, group_scales(panel, g));
        }
        unpack(sum)
    }

    /// As `relaxed` with widened values: each i16x8 half of a weight load is 2 columns × 4 values,
    /// and `i32x4_dot_i16x8` leaves each column's sum in two lanes, folded once per group.
    pub fn simd128(rows: [&[u16]; MR], panel: &Panel) -> [[f32; NR]; MR] {
        let gs = panel.group_steps;
        let groups = panel.scales.len() / NR;
        assert!(panel.data.len() >= groups * gs * NR * KSTEP && rows.iter().all(|r| r.len() >= groups * gs * KSTEP));
        let mut sum = [f32x4_splat(0.0); 2 * MR];
        for g in 0..groups {
            let mut acc = [i32x4_splat(0); 4 * MR];
            for s in g * gs..(g + 1) * gs {
                // SAFETY: as in `relaxed`; rows hold 4 u16 values per step.
                unsafe {
                    let p = panel.data.as_ptr().add(s * NR * KSTEP) as *const v128;
                    let (w0, w1) = (v128_load(p), v128_load(p.add(1)));
                    let w = [
                        i16x8_extend_low_i8x16(w0),
                        i16x8_extend_high_i8x16(w0),
                        i16x8_extend_low_i8x16(w1),
                        i16x8_extend_high_i8x16(w1),
                    ];
                    for i in 0..MR {
                        let a = v128_load64_splat(rows[i].as_ptr().add(s * KSTEP) as *const u64);
                        for (h, wh) in w.iter().enumerate() {
                            acc[4 * i + h] = i32x4_add(acc[4 * i + h], i32x4_dot_i16x8(*wh, a));
                        }
                    }
                }
            }
            // Lanes (0,1) of `acc[4i+h]` are column 2h, lanes (2,3) column 2h+1.
            let folded: [v128; 2 * MR] = std::array::from_fn(|v| {
                let (a, b) = (acc[2 * v], acc[2 * v + 1]);
                i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(a, b), i32x4_shuffle::<1, 3, 5, 7>(a, b))
            });
            scale_add(&mut sum, &folded, group_scales(panel, g));
        }
        unpack(sum)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Panel, TileRow, KSTEP, MR, NR, PAIR_ROWS};
    use std::arch::x86_64::*;

    /// `fma((acc − corr) → f32, weight scales × the row's group scale, sum)`: one group of a
    /// grouped tile, as the portable code computes it (`corr`: VNNI's offset, else zero).
    #[inline(always)]
    unsafe fn fold(sum: __m256, acc: __m256i, corr: __m256i, scale: __m256, row_scale: f32) -> __m256 {
        let t = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr));
        _mm256_fmadd_ps(t, _mm256_mul_ps(scale, _mm256_set1_ps(row_scale)), sum)
    }

    /// Checks a tile's bounds once, before its unchecked loads.
    fn check(rows: &[TileRow], panel: &Panel, offset: bool) -> (usize, usize) {
        let gs = panel.group_steps;
        let groups = panel.scales.len() / NR;
        assert!(panel.data.len() >= groups * gs * NR * KSTEP);
        assert!(rows.iter().all(|r| r.q.len() >= groups * gs * KSTEP && r.scales.len() >= groups));
        assert!(!offset || panel.corr.len() >= groups * NR);
        (gs, groups)
    }

    /// A 4-row × 8-column tile: per step of 4 K values, one 256-bit weight load (8 columns × 4
    /// values) and its absolute value serve all 4 rows, each row's 4 signed activations
    /// broadcast across the lanes and given the weights' signs (`vpsignb`); `vpmaddubsw`
    /// (|w| × ±a pair sums in i16, exact: see `Kernel::signed`) then `vpmaddwd` by ones leave
    /// each column's 4-value dot in its own i32 lane.
    ///
    /// SAFETY: the CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(rows: [TileRow; MR], panel: &Panel) -> [[f32; NR]; MR] {
        let (gs, groups) = check(&rows, panel, false);
        let ones = _mm256_set1_epi16(1);
        let mut sum = [_mm256_setzero_ps(); MR];
        for g in 0..groups {
            let mut acc = [_mm256_setzero_si256(); MR];
            for s in g * gs..(g + 1) * gs {
                // SAFETY (loads): bounds asserted above; unaligned loads.
                let w = _mm256_loadu_si256(panel.data.as_ptr().add(s * NR * KSTEP) as *const __m256i);
                // |w| as unsigned bytes (−128 gives 128).
                let magnitude = _mm256_sign_epi8(w, w);
                for i in 0..MR {
                    let a = _mm256_set1_epi32((rows[i].q.as_ptr().add(s * KSTEP) as *const i32).read_unaligned());
                    let p = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, w));
                    acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p, ones));
                }
            }
            let scale = _mm256_loadu_ps(panel.scales.as_ptr().add(g * NR));
            for i in 0..MR {
                sum[i] = fold(sum[i], acc[i], _mm256_setzero_si256(), scale, *rows[i].scales.get_unchecked(g));
            }
        }
        store(sum)
    }

    #[inline(always)]
    unsafe fn store(sum: [__m256; MR]) -> [[f32; NR]; MR] {
        let mut out = [[0.0f32; NR]; MR];
        for (row, s) in out.iter_mut().zip(sum) {
            _mm256_storeu_ps(row.as_mut_ptr(), s);
        }
        out
    }

    /// A 4-row × 8-column tile with `vpdpbusd`: per step of 4 K values, one 256-bit weight load
    /// serves all 4 rows, each row's 4 unsigned activations broadcast across the lanes and
    /// multiplied into the i32 accumulators in one instruction.
    macro_rules! vnni_tile {
        ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub unsafe fn $name(rows: [TileRow; MR], panel: &Panel) -> [[f32; NR]; MR] {
                let (gs, groups) = check(&rows, panel, true);
                let mut sum = [_mm256_setzero_ps(); MR];
                for g in 0..groups {
                    // Two accumulator sets over alternate steps: `vpdpbusd` has a latency of about
                    // five cycles and issues twice per cycle, so 4 chains alone leave it idle.
                    let mut acc = [[_mm256_setzero_si256(); MR]; 2];
                    let step = |acc: &mut [__m256i; MR], s: usize| {
                        // SAFETY (loads): bounds asserted above; unaligned loads.
                        let w = _mm256_loadu_si256(panel.data.as_ptr().add(s * NR * KSTEP) as *const __m256i);
                        for i in 0..MR {
                            let a =
                                _mm256_set1_epi32((rows[i].q.as_ptr().add(s * KSTEP) as *const i32).read_unaligned());
                            acc[i] = $dpbusd(acc[i], a, w);
                        }
                    };
                    let (start, end) = (g * gs, (g + 1) * gs);
                    let mut s = start;
                    while s + 2 <= end {
                        step(&mut acc[0], s);
                        step(&mut acc[1], s + 1);
                        s += 2;
                    }
                    if s < end {
                        step(&mut acc[0], s);
                    }
                    let acc: [__m256i; MR] = std::array::from_fn(|i| _mm256_add_epi32(acc[0][i], acc[1][i]));
                    let scale = _mm256_loadu_ps(panel.scales.as_ptr().add(g * NR));
                    let corr = _mm256_loadu_si256(panel.corr.as_ptr().add(g * NR) as *const __m256i);
                    for i in 0..MR {
                        sum[i] = fold(sum[i], acc[i], corr, scale, *rows[i].scales.get_unchecked(g));
                    }
                }
                store(sum)
            }
        };
    }

    /// Two adjacent panels (16 columns) × 8 rows in 512-bit registers: per step, the two panels'
    /// 32 bytes joined in one register serve all 8 rows, 64 products per `vpdpbusd`. The same integer sums, so the same
    /// results, as the 256-bit tile on each panel.
    ///
    /// SAFETY: the CPU must have AVX-512 F, BW, DQ, VNNI and VL, and AVX2.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vnni,avx512vl")]
    pub unsafe fn avx512_vnni_pair(rows: [TileRow; PAIR_ROWS], panels: [&Panel; 2]) -> [[[f32; NR]; PAIR_ROWS]; 2] {
        let [p0, p1] = panels;
        let (gs, groups) = check(&rows, p0, true);
        assert!(check(&rows, p1, true) == (gs, groups));
        let mut sum = [_mm512_setzero_ps(); PAIR_ROWS];
        for g in 0..groups {
            // The offset's correction first: the accumulators start at −128·Σw. One set of 8
            // rows is 8 independent `vpdpbusd` chains, enough for its latency.
            let corr = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(p0.corr.as_ptr().add(g * NR) as *const __m256i)),
                _mm256_loadu_si256(p1.corr.as_ptr().add(g * NR) as *const __m256i),
            );
            let mut acc = [_mm512_sub_epi32(_mm512_setzero_si512(), corr); PAIR_ROWS];
            for s in g * gs..(g + 1) * gs {
                // SAFETY (loads): bounds asserted above; unaligned loads.
                let lo = _mm256_loadu_si256(p0.data.as_ptr().add(s * NR * KSTEP) as *const __m256i);
                let hi = _mm256_loadu_si256(p1.data.as_ptr().add(s * NR * KSTEP) as *const __m256i);
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                for i in 0..PAIR_ROWS {
                    let a = _mm512_set1_epi32((rows[i].q.as_ptr().add(s * KSTEP) as *const i32).read_unaligned());
                    acc[i] = _mm512_dpbusd_epi32(acc[i], a, w);
                }
            }
            let lo = _mm256_loadu_ps(p0.scales.as_ptr().add(g * NR));
            let hi = _mm256_loadu_ps(p1.scales.as_ptr().add(g * NR));
            let scale = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
            for i in 0..PAIR_ROWS {
                // As `fold`, on 16 columns.
                let row_scale = _mm512_set1_ps(*rows[i].scales.get_unchecked(g));
                sum[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), _mm512_mul_ps(scale, row_scale), sum[i]);
            }
        }
        let mut out = [[[0.0f32; NR]; PAIR_ROWS]; 2];
        for i in 0..PAIR_ROWS {
            _mm256_storeu_ps(out[0][i].as_mut_ptr(), _mm512_castps512_ps256(sum[i]));
            _mm256_storeu_ps(out[1][i].as_mut_ptr(), _mm512_extractf32x8_ps::<1>(sum[i]));
        }
        out
    }

    vnni_tile!(
        /// SAFETY: the CPU must have AVX2, AVX-512 VNNI and AVX-512 VL.
        avx512_vnni,
        "avx2,fma,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32
    );
    vnni_tile!(
        /// SAFETY: the CPU must have AVX2 and AVX-VNNI.
        avx_vnni,
        "avx2,fma,avxvnni",
        _mm256_dpbusd_avx_epi32
    );
}
