//! f32 GEMM `c = a · b` for attention (scores and weighted values): 4-row × 8-column register
//! tiles (6 × 16 on x86-64) over B panels copied contiguous, K in blocks.
//!
//! Why not Candle's matmul: in wasm it ran attention's shapes (a group's query heads times 128
//! queries, against up to t keys) at about 7 GMAC/s; this runs them at 13–14 in Chromium
//! (`cargo xtask bench-kernels`). Each tile keeps its 8 accumulators in registers (f32x4
//! multiply-add: `relaxed_madd` in the relaxed-simd build, mul + add in the simd128 one) and
//! reuses every load of B across 4 rows. On x86-64 with AVX2 and FMA (chosen at run time) a
//! tile is 6 × 16: twelve 8-lane accumulators, enough independent FMA chains to cover their
//! latency, and 8 loads per 12 FMAs (4 × 16 ran attention's products at 22–33 GMAC/s on one
//! Sapphire Rapids core, 6 × 16 at 36–41); natively, with attention's heads spread over threads by the caller, this beat
//! Candle's `gemm` per block (docs/PERFORMANCE.md).

/// Rows and columns of one register tile.
#[cfg(target_arch = "x86_64")]
const MR: usize = 6;
#[cfg(not(target_arch = "x86_64"))]
const MR: usize = 4;
#[cfg(target_arch = "x86_64")]
const NR: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const NR: usize = 8;
/// K values per pass over the tiles: a panel of B (`KC × NR` floats) stays in L1 while every row
/// tile of A passes over it, and A's `m × KC` block in L2.
const KC: usize = 256;

/// Where the rows of a product end early (causal attention), so that tiles past every row's
/// end are skipped: at 512 tokens in blocks of 128 queries, a quarter of the scores and of the
/// weighted values' multiply-adds were on keys the queries cannot see.
#[derive(Debug, Clone, Copy)]
pub enum RowLimits<'a> {
    /// Every row needs every column over the whole K.
    All,
    /// Row `i` needs only its first `limits[i]` columns of C; the others are left as they were.
    Columns(&'a [usize]),
    /// Row `i` of A is 0 from `limits[i]` on, so its sum stops there (the same bits: what is
    /// skipped would add `0 · b`, and B is finite).
    Depth(&'a [usize]),
}

/// `c[m × n] = a[m × k] · b[k × n]`, rows `lda`, `ldb` and `n` apart. Every element is summed over
/// `k` in order with the same arithmetic wherever it falls (a full tile or an edge, any block),
/// so a query's scores do not depend on where its block starts.
#[allow(clippy::too_many_arguments)]
pub fn gemm(a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_limited(a, lda, b, ldb, c, m, n, k, RowLimits::All)
}

/// [`gemm`] with rows that end early ([`RowLimits`]).
///
/// Panics if a slice is too short for its shape, or the limits are not one per row.
#[allow(clippy::too_many_arguments)]
pub fn gemm_limited(
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    limits: RowLimits,
) {
    assert!(m == 0 || a.len() >= (m - 1) * lda + k, "gemm: A too short");
    assert!(k == 0 || b.len() >= (k - 1) * ldb + n, "gemm: B too short");
    assert!(c.len() >= m * n, "gemm: C too short");
    if let RowLimits::Columns(l) | RowLimits::Depth(l) = limits {
        assert_eq!(l.len(), m, "gemm: one limit per row");
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // The furthest any of rows `r0..r0 + rows` reaches (columns or K).
    let reach = |r0: usize, rows: usize, whole: usize| match limits {
        RowLimits::All => whole,
        RowLimits::Columns(l) | RowLimits::Depth(l) => l[r0..r0 + rows].iter().copied().max().unwrap_or(0).min(whole),
    };
    // Columns past every row's limit: no panel there is copied or multiplied.
    let widest = match limits {
        RowLimits::Columns(_) => reach(0, m, n),
        _ => n,
    };
    // B's panels are copied to contiguous `kc × NR` blocks (zero-padded past `n`): read in place,
    // rows `ldb` apart map to few cache sets (keys × 4 bytes: 8 KiB at 2,048 keys) and thrash L1.
    let mut panel = vec![0.0f32; KC.min(k) * NR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for c0 in (0..n).step_by(NR) {
            let cols = NR.min(n - c0);
            let needed = |r0, rows| match limits {
                RowLimits::Columns(_) => reach(r0, rows, n) > c0,
                _ => true,
            };
            if c0 >= widest {
                break;
            }
            for kk in 0..kc {
                let src = &b[(k0 + kk) * ldb + c0..(k0 + kk) * ldb + c0 + cols];
                panel[kk * NR..kk * NR + cols].copy_from_slice(src);
                panel[kk * NR + cols..(kk + 1) * NR].fill(0.0);
            }
            let wide = wide_tiles();
            let mut r0 = 0;
            while r0 < m {
                // Two tiles' rows at once in 512-bit registers (`x86_tile_wide`) where they run.
                let tile_rows = if wide && m - r0 > MR { 2 * MR } else { MR };
                let rows = tile_rows.min(m - r0);
                let depth = match limits {
                    RowLimits::Depth(_) => reach(r0, rows, k).saturating_sub(k0).min(kc),
                    _ => kc,
                };
                if !needed(r0, rows) || (depth == 0 && k0 > 0) {
                    r0 += rows;
                    continue;
                }
                let at = TileAt { r0, rows, c0, cols, k0, lda, n };
                if tile_rows == MR {
                    run_tile::<MR>(a, c, &panel, at, depth, tile);
                } else {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `wide` holds only where the CPU has AVX-512 F (`wide_tiles`); the
                    // tile's lengths are checked by `run_tile`.
                    run_tile::<{ 2 * MR }>(a, c, &panel, at, depth, |acc, a, b, k| unsafe {
                        x86_tile_wide(acc, a, b, k)
                    });
                }
                r0 += rows;
            }
        }
    }
}

/// Where one register tile falls: rows `r0..r0 + rows` of A and C, columns `c0..c0 + cols` of C,
/// K values from `k0`; A's rows `lda` apart, C's `n`.
#[derive(Clone, Copy)]
struct TileAt {
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
    k0: usize,
    lda: usize,
    n: usize,
}

/// One tile of `R` rows over `depth` K values of the current panel: the accumulators start from
/// C (0 in the first K block), the results go back to C's real rows.
fn run_tile<const R: usize>(
    a: &[f32],
    c: &mut [f32],
    panel: &[f32],
    at: TileAt,
    depth: usize,
    kernel: impl Fn(&mut [[f32; NR]; R], [&[f32]; R], &[f32], usize),
) {
    let TileAt { r0, rows, c0, cols, k0, lda, n } = at;
    // Missing rows of a ragged tile repeat the first; their results are dropped.
    let row_of = |i: usize| if i < rows { r0 + i } else { r0 };
    // Later K blocks continue each element's sum where the earlier one left it.
    let mut acc = [[0.0f32; NR]; R];
    if k0 > 0 {
        for (i, row) in acc.iter_mut().enumerate() {
            let r = row_of(i);
            row[..cols].copy_from_slice(&c[r * n + c0..r * n + c0 + cols]);
        }
    }
    if depth > 0 {
        let a_rows: [&[f32]; R] = std::array::from_fn(|i| &a[row_of(i) * lda + k0..row_of(i) * lda + k0 + depth]);
        assert!(panel.len() >= depth * NR);
        kernel(&mut acc, a_rows, &panel[..depth * NR], depth);
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        c[(r0 + i) * n + c0..(r0 + i) * n + c0 + cols].copy_from_slice(&row[..cols]);
    }
}

/// One 4 × 8 tile: `acc[i][j] += Σ_kk a[i][kk] · b[kk * NR + j]`, in order of `kk`.
fn tile(acc: &mut [[f32; NR]; MR], a: [&[f32]; MR], b: &[f32], k: usize) {
    assert!(b.len() >= k * NR && a.iter().all(|r| r.len() >= k));
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    // SAFETY: lengths asserted above.
    unsafe {
        wasm_tile(acc, a, b, k)
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernel::has_avx2() {
        // SAFETY: lengths asserted above; the CPU has AVX2 and FMA.
        return unsafe { x86_tile(acc, a, b, k) };
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    for kk in 0..k {
        let bk = &b[kk * NR..kk * NR + NR];
        for i in 0..MR {
            let x = a[i][kk];
            for j in 0..NR {
                acc[i][j] += x * bk[j];
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
unsafe fn wasm_tile(out: &mut [[f32; NR]; MR], a: [&[f32]; MR], b: &[f32], k: usize) {
    use core::arch::wasm32::*;
    #[inline(always)]
    fn madd(x: v128, y: v128, acc: v128) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        {
            f32x4_relaxed_madd(x, y, acc)
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            f32x4_add(acc, f32x4_mul(x, y))
        }
    }
    let mut acc = [f32x4_splat(0.0); 2 * MR];
    for (i, row) in out.iter().enumerate() {
        let p = row.as_ptr() as *const v128;
        acc[2 * i] = v128_load(p);
        acc[2 * i + 1] = v128_load(p.add(1));
    }
    for kk in 0..k {
        // Unaligned v128 and 32-bit loads are allowed in wasm.
        let p = b.as_ptr().add(kk * NR) as *const v128;
        let (b0, b1) = (v128_load(p), v128_load(p.add(1)));
        for i in 0..MR {
            let x = v128_load32_splat(a[i].as_ptr().add(kk) as *const u32);
            acc[2 * i] = madd(x, b0, acc[2 * i]);
            acc[2 * i + 1] = madd(x, b1, acc[2 * i + 1]);
        }
    }
    for (i, row) in out.iter_mut().enumerate() {
        let p = row.as_mut_ptr() as *mut v128;
        v128_store(p, acc[2 * i]);
        v128_store(p.add(1), acc[2 * i + 1]);
    }
}

/// Whether 12-row tiles in 512-bit registers run (x86-64 with AVX-512 F): one 16-lane load of B
/// serves 12 rows per step, twice the multiply-adds per instruction of the AVX2 tile, each
/// element still one FMA per step in order of K (so the same bits).
fn wide_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernel::has_avx2() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The wide tile of [`wide_tiles`].
///
/// SAFETY: the CPU must have AVX-512 F and FMA; `b` holds `k * NR` values and each row `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn x86_tile_wide(out: &mut [[f32; NR]; 2 * MR], a: [&[f32]; 2 * MR], b: &[f32], k: usize) {
    use std::arch::x86_64::*;
    let mut acc: [__m512; 2 * MR] = std::array::from_fn(|i| _mm512_loadu_ps(out[i].as_ptr()));
    for kk in 0..k {
        let bv = _mm512_loadu_ps(b.as_ptr().add(kk * NR));
        for i in 0..2 * MR {
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*a[i].get_unchecked(kk)), bv, acc[i]);
        }
    }
    for (row, v) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(row.as_mut_ptr(), v);
    }
}

/// Whether this build and CPU run a SIMD tile (not portable code).
pub fn is_simd() -> bool {
    cfg!(all(target_arch = "wasm32", target_feature = "simd128")) || crate::kernel::has_avx2()
}

/// The 6 × 16 tile with AVX2 FMA: per `kk`, two 8-lane loads of B serve all 6 rows, each row's
/// value broadcast. Each element is still summed in order of `kk` (one FMA per step).
///
/// SAFETY: the CPU must have AVX2 and FMA; `b` holds `k * NR` values and each row `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn x86_tile(out: &mut [[f32; NR]; MR], a: [&[f32]; MR], b: &[f32], k: usize) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for (i, row) in out.iter().enumerate() {
        acc[2 * i] = _mm256_loadu_ps(row.as_ptr());
        acc[2 * i + 1] = _mm256_loadu_ps(row.as_ptr().add(8));
    }
    for kk in 0..k {
        let p = b.as_ptr().add(kk * NR);
        let (b0, b1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        for i in 0..MR {
            let x = _mm256_broadcast_ss(&*a[i].as_ptr().add(kk));
            acc[2 * i] = _mm256_fmadd_ps(x, b0, acc[2 * i]);
            acc[2 * i + 1] = _mm256_fmadd_ps(x, b1, acc[2 * i + 1]);
        }
    }
    for (i, row) in out.iter_mut().enumerate() {
        _mm256_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
        _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[2 * i + 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn gemm_matches_a_plain_triple_loop_on_ragged_shapes() {
        for (i, &(m, n, k)) in
            [(1, 1, 1), (3, 7, 5), (4, 8, 16), (9, 17, 33), (13, 130, 64), (2, 9, 0), (31, 40, 300)].iter().enumerate()
        {
            let (lda, ldb) = (k + 3, n + 5);
            let a = values(m * lda, i as u64);
            let b = values(k.max(1) * ldb, 100 + i as u64);
            let mut c = vec![f32::NAN; m * n];
            gemm(&a, lda, &b, ldb, &mut c, m, n, k);
            for r in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|kk| a[r * lda + kk] * b[kk * ldb + j]).sum();
                    let got = c[r * n + j];
                    assert!((got - want).abs() <= 1e-5 * (k as f32).max(1.0), "{m}x{n}x{k} [{r},{j}]: {got} vs {want}");
                }
            }
        }
    }

    /// Rows that end early give the full product's bits where they are read: `Columns` leaves
    /// the rest of C as it was, `Depth` (A's rows 0 past their limits) sums only what is nonzero.
    #[test]
    fn limited_rows_give_the_full_products_bits() {
        for (i, &(m, n, k)) in [(5, 19, 7), (13, 40, 33), (26, 130, 300), (7, 9, 600)].iter().enumerate() {
            let limits: Vec<usize> = (0..m).map(|r| (r * 37 + i * 11) % (n.max(k) + 2)).collect();
            let a = values(m * k, 7 + i as u64);
            let b = values(k * n, 70 + i as u64);
            let mut full = vec![0.0; m * n];
            gemm(&a, k, &b, n, &mut full, m, n, k);
            let mut c = vec![f32::NAN; m * n];
            gemm_limited(&a, k, &b, n, &mut c, m, n, k, RowLimits::Columns(&limits));
            for r in 0..m {
                for j in 0..n {
                    let (got, want) = (c[r * n + j], full[r * n + j]);
                    if j < limits[r] {
                        assert_eq!(got.to_bits(), want.to_bits(), "columns {m}x{n}x{k} [{r},{j}]");
                    }
                }
            }
            let mut zeroed = a.clone();
            for (r, row) in zeroed.chunks_exact_mut(k).enumerate() {
                row[limits[r].min(k)..].fill(0.0);
            }
            gemm(&zeroed, k, &b, n, &mut full, m, n, k);
            let mut c = vec![f32::NAN; m * n];
            gemm_limited(&zeroed, k, &b, n, &mut c, m, n, k, RowLimits::Depth(&limits));
            for (idx, (got, want)) in c.iter().zip(&full).enumerate() {
                assert_eq!(got.to_bits(), want.to_bits(), "depth {m}x{n}x{k} [{}, {}]", idx / n, idx % n);
            }
        }
    }
}
