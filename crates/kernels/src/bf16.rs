//! 8-bit weights multiplied in bf16 with f32 sums over the whole K: `Kernel::X86AmxBf16`.
//!
//! Why: Q8_0's scale changes every 32 K values, so int8 tiles must leave the tile unit and be
//! folded into f32 with AVX-512 once per 32 K values and output — on AMX that fold, not the
//! multiply, bounds the int8 kernel (docs/PERFORMANCE.md). Here each pair of panels' weights is
//! expanded once per row block to bf16 with its scales multiplied in (`q · d`, 8 significant
//! bits), activations are rounded to bf16 once per call, and `tdpbf16ps` sums in f32 across the
//! whole K with no fold at all. The weights stay int8 in memory; the bf16 copy of one pair of
//! panels lives in a per-thread buffer.
//!
//! Arithmetic: every operand is rounded to nearest even bf16 (as `vcvtne2ps2bf16`: denormals to
//! zero), products of two bf16 are exact in f32, sums in f32. The portable code adds in order
//! of K; the tile unit in its own order, so the two agree to f32 rounding (tests).

use crate::kernel::Columns;
use crate::pack::{PackedMatrix, NR};
use crate::quant::Scratch;

/// Rows of a tile.
const ROWS: usize = 16;
/// bf16 values of K per tile row (64 bytes).
const KC: usize = 32;

/// `x` to bf16, round to nearest even, denormals to (signed) zero, NaN quiet: what
/// `vcvtne2ps2bf16` does.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return (bits >> 16) as u16 & 0x8000;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

fn bf16_value(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// K padded to whole tile rows.
fn kb(w: &PackedMatrix) -> usize {
    w.kp.next_multiple_of(KC)
}

/// Index of activation (row `r`, K `k`) in `Scratch::bf16`: `[16-row tile][K chunk][row][32]`,
/// so each tile the kernel loads is one contiguous KiB.
fn at(r: usize, k: usize, kb: usize) -> usize {
    ((r / ROWS * (kb / KC) + k / KC) * ROWS + r % ROWS) * KC + k % KC
}

/// Rounds `x` (`[m, k]`) to bf16 into `s.bf16` (rows padded to whole tiles, K to whole chunks,
/// with zeros; every value is written, so the buffer's earlier contents never show).
pub(crate) fn prepare(x: &[f32], m: usize, w: &PackedMatrix, s: &mut Scratch) {
    let (k, kb) = (w.k, kb(w));
    let padded = m.div_ceil(ROWS) * ROWS;
    s.bf16.resize_zeroed(padded * kb);
    for r in 0..padded {
        let row = if r < m { &x[r * k..(r + 1) * k] } else { &[] };
        for c in 0..kb / KC {
            let start = at(r, c * KC, kb);
            let chunk = row.get(c * KC..((c + 1) * KC).min(k)).unwrap_or(&[]);
            let (out, zeros) = s.bf16[start..start + KC].split_at_mut(chunk.len());
            zeros.fill(0);
            #[cfg(target_arch = "x86_64")]
            if chunk.len() == KC && crate::kernel::has_avx512_bf16() {
                // SAFETY: the CPU has AVX-512 F and BF16; 32 values in and out.
                unsafe { x86::round_32(chunk, out) };
                continue;
            }
            for (o, &v) in out.iter_mut().zip(chunk) {
                *o = bf16_bits(v);
            }
        }
    }
}

/// The portable arithmetic (what `Kernel::X86AmxBf16` runs as where the CPU lacks AMX-BF16):
/// each output a sum in order of K of bf16 activations times bf16 `q · scale`.
pub(crate) fn multiply_portable(m: usize, w: &PackedMatrix, out: &mut Columns, s: &Scratch) {
    let kb = kb(w);
    for p in out.panels() {
        let cols = NR.min(w.n - p * NR);
        for j in 0..cols {
            let c = p * NR + j;
            let weights: Vec<f32> = (0..w.kp).map(|k| bf16_value(weight_bits(w, c, k))).collect();
            for r in 0..m {
                let mut sum = 0.0f32;
                for (k, &wv) in weights.iter().enumerate() {
                    sum += bf16_value(s.bf16[at(r, k, kb)]) * wv;
                }
                out.at(r, p, cols)[j] = sum;
            }
        }
    }
}

/// Weight (output `c`, input `k`) as bf16: its int8 value times its group's scale, in f32, rounded.
fn weight_bits(w: &PackedMatrix, c: usize, k: usize) -> u16 {
    bf16_bits(w.value(c, k) as f32 * w.scales[w.scale_at(k / w.group, c)])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 32 values to bf16 with `vcvtne2ps2bf16`.
    ///
    /// SAFETY: AVX-512 F and BF16; `values` and `out` hold 32.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_32(values: &[f32], out: &mut [u16]) {
        assert!(values.len() >= 32 && out.len() >= 32);
        let lo = _mm512_loadu_ps(values.as_ptr());
        let hi = _mm512_loadu_ps(values.as_ptr().add(16));
        // The first operand fills the upper half.
        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, packed);
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod amx {
    use super::*;
    use crate::pack::{KSTEP, STEP_BYTES};

    /// u16 per row of an expanded pair of panels: one K pair × 16 columns (64 bytes).
    const PAIR_ROW: usize = 4 * NR;
    use crate::aligned::Aligned;
    use crate::kernel::Panel;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// CPUID leaf 7, subleaf 0: EDX bit 22, AMX-BF16.
    pub fn cpu_has_amx_bf16() -> bool {
        __cpuid_count(7, 0).edx & (1 << 22) != 0
    }

    /// Palette 1: tmm0–tmm3 f32 sums (16 × 16) of 2 row tiles × 2 pairs of panels, tmm4 / tmm5
    /// the row tiles' activations and tmm6 / tmm7 the pairs' weights (16 rows of 64 bytes: 32
    /// bf16 of K, or 16 K pairs × 16 columns): per 32 K values, 4 loads for 4 multiplies, each
    /// loaded tile used twice.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn new() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c[48 + t] = ROWS as u8;
            }
            Self(c)
        }
    }

    #[repr(C, align(64))]
    struct Block([[f32; 16]; ROWS]);

    thread_local! {
        /// Two pairs of panels' weights in bf16, each `[K pair][16 columns][2]` (the tile's
        /// layout, `kb / 2 · PAIR_ROW` values).
        static PAIRS: RefCell<Aligned<u16>> = const { RefCell::new(Aligned::new()) };
    }

    /// `Kernel::X86AmxBf16`'s part of a matmul, activations rounded by `prepare`.
    ///
    /// SAFETY: the CPU has AMX-BF16, AVX-512 F/BW/BF16 and this process the tile state.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")]
    pub unsafe fn multiply(m: usize, w: &PackedMatrix, out: &mut Columns, s: &Scratch) {
        let kb = kb(w);
        let expanded = kb / 2 * PAIR_ROW;
        assert!(s.bf16.len() >= m.div_ceil(ROWS) * ROWS * kb, "activations not rounded to bf16");
        let config = TileConfig::new();
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let panels = out.panels();
        let mut blocks = [
            [Block([[0.0; 16]; ROWS]), Block([[0.0; 16]; ROWS])],
            [Block([[0.0; 16]; ROWS]), Block([[0.0; 16]; ROWS])],
        ];
        PAIRS.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize_zeroed(2 * expanded);
            for start in (0..m).step_by(crate::kernel::ROW_BLOCK) {
                let end = (start + crate::kernel::ROW_BLOCK).min(m);
                // Two pairs of panels (32 columns) at a time.
                for p in panels.clone().step_by(4) {
                    let pairs = if p + 2 < panels.end { 2 } else { 1 };
                    for (j, half) in buf.chunks_exact_mut(expanded).take(pairs).enumerate() {
                        let q = p + 2 * j;
                        let second = (q + 1 < w.panels).then(|| Panel::of(w, q + 1, false));
                        expand_pair(&Panel::of(w, q, false), second.as_ref(), w.kp, kb, half);
                    }
                    let cols = |j: usize| (2 * NR).min(w.n - (p + 2 * j) * NR);
                    let tiles = (end - start).div_ceil(ROWS);
                    for t in (0..tiles).step_by(2) {
                        let first = start / ROWS + t;
                        let row_tiles = 2.min(tiles - t);
                        // Whole tiles go straight to the output, ragged ones through `blocks`.
                        let whole = |i: usize, j: usize| (first + i + 1) * ROWS <= end && cols(j) == 2 * NR;
                        let dst: [[(*mut f32, usize); 2]; 2] = std::array::from_fn(|i| {
                            std::array::from_fn(|j| {
                                if i < row_tiles && j < pairs && whole(i, j) {
                                    out.tile((first + i) * ROWS, p + 2 * j, ROWS, 2 * NR)
                                } else {
                                    (blocks[i][j].0.as_mut_ptr() as *mut f32, 2 * NR)
                                }
                            })
                        });
                        multiply_block(&s.bf16, first, row_tiles, kb, &buf, pairs, dst);
                        for (i, j) in (0..row_tiles).flat_map(|i| (0..pairs).map(move |j| (i, j))) {
                            let r0 = (first + i) * ROWS;
                            if !whole(i, j) {
                                for (r, row) in (r0..end.min(r0 + ROWS)).zip(&blocks[i][j].0) {
                                    out.at(r, p + 2 * j, cols(j)).copy_from_slice(&row[..cols(j)]);
                                }
                            }
                        }
                    }
                }
            }
        });
        asm!("tilerelease", options(nostack, nomem));
    }

    /// Row tiles `first`, `first + 1` (`row_tiles` of them) times the expanded pairs in
    /// `pairs_bf16` (`pairs` of them) over all of K; the 16 × 16 sums of row tile `i` and pair `j`
    /// stored at `dst[i][j]` (rows that many values apart).
    ///
    /// SAFETY: the configuration of `multiply` loaded; `acts` holds the tiles, `pairs_bf16`
    /// the expanded pairs; each used `dst` writable for 16 rows of 16 values.
    #[inline(always)]
    unsafe fn multiply_block(
        acts: &[u16],
        first: usize,
        row_tiles: usize,
        kb: usize,
        pairs_bf16: &[u16],
        pairs: usize,
        dst: [[(*mut f32, usize); 2]; 2],
    ) {
        let chunks = kb / KC;
        let expanded = kb / 2 * PAIR_ROW;
        assert!(acts.len() >= (first + row_tiles) * ROWS * kb && pairs_bf16.len() >= pairs * expanded);
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        let (two_rows, two_pairs) = (row_tiles == 2, pairs == 2);
        for c in 0..chunks {
            let a = |i: usize| acts.as_ptr().add(((first + i) * chunks + c) * ROWS * KC);
            // 16 K pairs of the weights: rows `16c..16c + 16` of an expanded pair.
            let b = |j: usize| pairs_bf16.as_ptr().add(j * expanded + c * ROWS * PAIR_ROW);
            asm!(
                "tileloadd tmm4, [{a} + {ld}*1]",
                "tileloadd tmm6, [{b} + {ld}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                a = in(reg) a(0), b = in(reg) b(0), ld = in(reg) 64usize, options(nostack, readonly)
            );
            if two_pairs {
                asm!(
                    "tileloadd tmm7, [{b} + {ld}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    b = in(reg) b(1), ld = in(reg) 64usize, options(nostack, readonly)
                );
            }
            if two_rows {
                asm!(
                    "tileloadd tmm5, [{a} + {ld}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    a = in(reg) a(1), ld = in(reg) 64usize, options(nostack, readonly)
                );
                if two_pairs {
                    asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                }
            }
        }
        let store = |(c, stride): (*mut f32, usize)| (c, stride * 4);
        let (c, ld) = store(dst[0][0]);
        asm!("tilestored [{c} + {ld}*1], tmm0", c = in(reg) c, ld = in(reg) ld, options(nostack));
        if two_pairs {
            let (c, ld) = store(dst[0][1]);
            asm!("tilestored [{c} + {ld}*1], tmm1", c = in(reg) c, ld = in(reg) ld, options(nostack));
        }
        if two_rows {
            let (c, ld) = store(dst[1][0]);
            asm!("tilestored [{c} + {ld}*1], tmm2", c = in(reg) c, ld = in(reg) ld, options(nostack));
            if two_pairs {
                let (c, ld) = store(dst[1][1]);
                asm!("tilestored [{c} + {ld}*1], tmm3", c = in(reg) c, ld = in(reg) ld, options(nostack));
            }
        }
    }

    /// A pair of panels' int8 weights as the bf16 tile operand, scales multiplied in: step `s`
    /// (4 K values × 16 columns, 64 bytes) becomes rows `2s` (each column's K values 0, 1) and
    /// `2s + 1` (values 2, 3) of `buf`; steps past `kp` are zero. `second`: the odd panel's
    /// partner, absent past the last panel (its columns come out zero).
    ///
    /// SAFETY: AVX-512 F/BW/BF16; the pair stored together (`PAIR`).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
    unsafe fn expand_pair(first: &Panel, second: Option<&Panel>, kp: usize, kb: usize, buf: &mut [u16]) {
        assert!(first.data.len() >= kp / KSTEP * STEP_BYTES && buf.len() >= kb / 2 * PAIR_ROW);
        let groups = first.scales.len() / NR;
        let group_steps = first.group_steps;
        let zero = _mm256_setzero_ps();
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let mut scales = [_mm512_setzero_ps(); 4];
        for g in 0..groups {
            let lo = _mm256_loadu_ps(first.scales.as_ptr().add(g * NR));
            let hi = second.map_or(zero, |p| _mm256_loadu_ps(p.scales.as_ptr().add(g * NR)));
            let all = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
            for (j, v) in scales.iter_mut().enumerate() {
                // Lanes 4c..4c + 4 hold column 4j + c's K values: its scale four times.
                let j = j as i32 * 4;
                let idx = _mm512_setr_epi32(
                    j,
                    j,
                    j,
                    j,
                    j + 1,
                    j + 1,
                    j + 1,
                    j + 1,
                    j + 2,
                    j + 2,
                    j + 2,
                    j + 2,
                    j + 3,
                    j + 3,
                    j + 3,
                    j + 3,
                );
                *v = _mm512_permutexvar_ps(idx, all);
            }
            for s in g * group_steps..(g + 1) * group_steps {
                let bytes = first.data.as_ptr().add(s * STEP_BYTES);
                let f: [__m512; 4] = std::array::from_fn(|j| {
                    let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(bytes.add(16 * j) as *const __m128i));
                    _mm512_mul_ps(_mm512_cvtepi32_ps(q), scales[j])
                });
                // Dword d of a half: column d / 2's K values 2(d % 2), 2(d % 2) + 1.
                let cols_0_7: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(f[1], f[0]));
                let cols_8_15: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(f[3], f[2]));
                let row = buf.as_mut_ptr().add(2 * s * PAIR_ROW) as *mut __m512i;
                _mm512_storeu_si512(row, _mm512_permutex2var_epi32(cols_0_7, even, cols_8_15));
                _mm512_storeu_si512(row.add(1), _mm512_permutex2var_epi32(cols_0_7, odd, cols_8_15));
            }
        }
        buf[kp / 2 * PAIR_ROW..kb / 2 * PAIR_ROW].fill(0);
    }
}
