//! The kernels' reference check: a plain f32 matmul of the dequantized weights, with an error
//! bound derived from the activation quantization step (the only approximation the kernels add
//! once the weights are int8).

use crate::{matmul_with, Kernel, PackedMatrix, ScaleLayout, Scratch};

/// (m, n, k): single rows, ragged tiles (m not a multiple of 4, n of 8, k of 4 or 32), a full
/// row block, a long K, and AMX's shapes: 16-row tiles with a ragged last one over pairs of
/// panels, and rows across x86-64's 512-row blocks.
pub const SHAPES: [(usize, usize, usize); 11] = [
    (1, 1, 4),
    (1, 8, 32),
    (3, 13, 37),
    (4, 8, 64),
    (5, 17, 96),
    (7, 9, 130),
    (9, 24, 256),
    (66, 19, 100),
    (2, 5, 1024),
    (40, 48, 320),
    (530, 16, 64),
];

/// Deterministic values in [-1, 1) (xorshift), so a failure reproduces from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Runs `kernel` on random `x[m, k]` and `W[n, k]` packed with `layout` and compares with f32;
/// returns the worst error as a fraction of its bound (≤ 1 passes), or which output broke it.
pub fn check(kernel: Kernel, m: usize, n: usize, k: usize, layout: ScaleLayout, seed: u64) -> Result<f32, String> {
    let mut rng = Rng::new(seed);
    // Activations with an outlier column, as real hidden states have.
    let mut x = rng.vec(m * k, 3.0);
    for r in 0..m {
        x[r * k] *= 8.0;
    }
    let w = rng.vec(n * k, 0.05);
    let packed = PackedMatrix::pack(&w, n, k, layout).map_err(|e| e.to_string())?;
    let wd = packed.dequantized();
    let mut out = vec![f32::NAN; m * n];
    let mut scratch = Scratch::default();
    matmul_with(kernel, &x, m, &packed, &mut out, &mut scratch);
    let levels = kernel.levels() as f32;
    let mut worst = 0.0f32;
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        let (lo, hi) = row.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let step = (hi - lo) / levels;
        for c in 0..n {
            let wc = &wd[c * k..(c + 1) * k];
            let exact: f64 = row.iter().zip(wc).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs: f64 = row.iter().zip(wc).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            let wsum: f64 = wc.iter().map(|&v| v.abs() as f64).sum();
            // Each activation is off by at most half a step; f32 accumulation adds rounding.
            // bf16 rounds each activation and each weight by at most 2⁻⁸ of itself.
            let bound = if kernel == Kernel::X86AmxBf16 {
                2f64.powi(-7) * abs + 1e-5 * (abs + 1.0)
            } else {
                0.5 * step as f64 * wsum + 1e-5 * (abs + 1.0)
            };
            let err = (out[r * n + c] as f64 - exact).abs();
            if err.is_nan() || err > bound {
                return Err(format!(
                    "{} {m}x{n}x{k} {}: out[{r}][{c}] = {}, f32 reference {exact}, bound {bound:.2e}",
                    kernel.name(),
                    layout.name(),
                    out[r * n + c]
                ));
            }
            worst = worst.max((err / bound) as f32);
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prepare, Columns};

    const LAYOUTS: [ScaleLayout; 4] =
        [ScaleLayout::PerChannel, ScaleLayout::PerGroup(4), ScaleLayout::PerGroup(32), ScaleLayout::PerGroup(128)];

    #[test]
    fn every_kernel_variant_matches_f32_on_ragged_shapes() {
        // A variant this machine lacks runs as portable code with its quantization.
        for kernel in Kernel::ALL {
            for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
                for layout in LAYOUTS {
                    check(kernel, m, n, k, layout, 7 + i as u64).unwrap();
                }
            }
        }
    }

    /// The x86 microkernels' sums are exact integers folded like the portable code's, so their
    /// output equals, to the bit, the portable arithmetic with the same quantization (what a
    /// variant runs as where the CPU lacks it), weights of −128 included.
    #[test]
    fn x86_microkernels_match_the_portable_arithmetic_to_the_bit() {
        for kernel in [Kernel::X86Avx2, Kernel::X86Vnni, Kernel::X86Amx] {
            if !kernel.runs_here() {
                eprintln!("this CPU lacks {kernel:?}: it ran as portable code above");
                continue;
            }
            for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
                for layout in LAYOUTS {
                    let mut rng = Rng::new(40 + i as u64);
                    let x = rng.vec(m * k, 2.0);
                    let mut w = PackedMatrix::pack(&rng.vec(n * k, 0.05), n, k, layout).unwrap();
                    w.data.iter_mut().step_by(7).for_each(|v| *v = -128);
                    let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
                    let mut s = Scratch::default();
                    matmul_with(kernel, &x, m, &w, &mut a, &mut s);
                    crate::kernel::matmul_portable(kernel, &x, m, &w, &mut b, &mut s);
                    assert_eq!(a, b, "{kernel:?} {m}x{n}x{k} {}", layout.name());
                }
            }
        }
    }

    /// AMX-BF16 against the portable bf16 arithmetic: the same rounded operands, whose products
    /// are exact, so only the order of the f32 sums differs; checked against their f64 sum.
    /// A wrong column or K pair in the expanded weights would be off by whole products.
    #[test]
    fn amx_bf16_matches_the_portable_arithmetic_to_f32_rounding() {
        if !Kernel::X86AmxBf16.runs_here() {
            eprintln!("this CPU lacks AMX-BF16: it ran as portable code above");
            return;
        }
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            for layout in LAYOUTS {
                let mut rng = Rng::new(60 + i as u64);
                let x = rng.vec(m * k, 2.0);
                let w = PackedMatrix::pack(&rng.vec(n * k, 0.05), n, k, layout).unwrap();
                let (mut tiles, mut portable) = (vec![0.0; m * n], vec![0.0; m * n]);
                let mut s = Scratch::default();
                matmul_with(Kernel::X86AmxBf16, &x, m, &w, &mut tiles, &mut s);
                crate::kernel::matmul_portable(Kernel::X86AmxBf16, &x, m, &w, &mut portable, &mut s);
                let wd = w.dequantized();
                for r in 0..m {
                    for c in 0..n {
                        let abs: f64 = (0..k).map(|j| (x[r * k + j] as f64 * wd[c * k + j] as f64).abs()).sum();
                        let (a, b) = (tiles[r * n + c] as f64, portable[r * n + c] as f64);
                        let bound = 4.0 * k as f64 * f32::EPSILON as f64 * abs + 1e-30;
                        assert!(
                            (a - b).abs() <= bound,
                            "{m}x{n}x{k} {} [{r}][{c}]: {a} vs {b} ({bound:.1e})",
                            layout.name()
                        );
                    }
                }
            }
        }
    }

    /// Threads that each compute some columns of one prepared matmul write exactly what one
    /// call writes: every variant, odd panel counts, cuts inside a pair. One scratch serves
    /// every shape in turn (stale values from a larger one must not show), and the first
    /// result comes from a fresh scratch.
    #[test]
    fn column_parts_compute_what_the_whole_computes() {
        for kernel in Kernel::ALL {
            let mut s = Scratch::default();
            for (i, &(m, n, k)) in SHAPES.iter().enumerate().rev() {
                let mut rng = Rng::new(90 + i as u64);
                let x = rng.vec(m * k, 1.0);
                let w = PackedMatrix::pack(&rng.vec(n * k, 0.1), n, k, ScaleLayout::PerGroup(32)).unwrap();
                let (mut whole, mut parts) = (vec![0.0; m * n], vec![f32::NAN; m * n]);
                matmul_with(kernel, &x, m, &w, &mut whole, &mut Scratch::default());
                let prepared = crate::prepare(kernel, &x, m, &w, &mut s);
                let all = crate::Columns::new(&mut parts, m, &w);
                let third = all.panels().end / 3;
                let (a, rest) = all.split_at(third + 1);
                let (b, c) = rest.split_at(2 * third + 1);
                assert!(a.panels().end == b.panels().start && b.panels().end == c.panels().start);
                std::thread::scope(|scope| {
                    for part in [a, b, c] {
                        let prepared = &prepared;
                        scope.spawn(move || prepared.multiply(part));
                    }
                });
                assert_eq!(whole, parts, "{kernel:?} {m}x{n}x{k}");
            }
        }
    }

    #[test]
    fn seven_bit_activations_are_coarser_but_bounded() {
        // The 7-bit path (relaxed-simd) must differ from the 8-bit one: the check would not
        // notice a kernel that ignored the level count.
        let (m, n, k) = (3, 9, 64);
        let mut rng = Rng::new(3);
        let x = rng.vec(m * k, 1.0);
        let w = PackedMatrix::pack(&rng.vec(n * k, 0.1), n, k, ScaleLayout::PerChannel).unwrap();
        let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
        let mut s = Scratch::default();
        matmul_with(Kernel::Portable, &x, m, &w, &mut a, &mut s);
        matmul_with(Kernel::WasmRelaxedSimd, &x, m, &w, &mut b, &mut s);
        assert!(a.iter().zip(&b).any(|(p, q)| p != q));
    }

    #[test]
    fn a_wrong_kernel_fails_the_check() {
        // A sign error in the zero-point correction must be caught by the bound.
        let mut rng = Rng::new(11);
        let (m, n, k) = (2, 8, 32);
        // All negative: the zero point is at the top, so its correction carries the result.
        let x: Vec<f32> = rng.vec(m * k, 1.0).iter().map(|v| v - 2.0).collect();
        let w = PackedMatrix::pack(&rng.vec(n * k, 0.1), n, k, ScaleLayout::PerChannel).unwrap();
        let mut broken = w.clone();
        broken.zero_corr.iter_mut().for_each(|c| *c = -*c);
        let (mut good, mut bad) = (vec![0.0; m * n], vec![0.0; m * n]);
        let mut s = Scratch::default();
        matmul_with(Kernel::Portable, &x, m, &w, &mut good, &mut s);
        matmul_with(Kernel::Portable, &x, m, &broken, &mut bad, &mut s);
        let max = good.iter().zip(&bad).map(|(g, b)| (g - b).abs()).fold(0.0, f32::max);
        assert!(max > 0.1, "{max}");
    }

    #[test]
    fn the_self_test_passes_in_this_build() {
        let s = crate::self_test(1).unwrap();
        assert!(s.starts_with(crate::kernel().name()), "{s}");
    }

    #[test]
    fn scratch_is_reused_across_shapes() {
        let mut s = Scratch::default();
        let w = PackedMatrix::pack(&[0.5; 64], 2, 32, ScaleLayout::PerChannel).unwrap();
        let mut out = vec![0.0; 4];
        matmul_with(Kernel::Portable, &[1.0; 64], 2, &w, &mut out, &mut s);
        assert!(out.iter().all(|&v| (v - 16.0).abs() < 1e-3), "{out:?}");
        let cap = s.q8.capacity();
        matmul_with(Kernel::Portable, &[1.0; 32], 1, &w, &mut out[..2], &mut s);
        assert_eq!(s.q8.capacity(), cap);
    }

    /// Two threads over a 0.6B decoder's worth of weights (28 layers, Skywork/Qwen3-0.6B shapes,
    /// read from memory, not cache) at 64 rows: by rows (each thread all weights, half the rows)
    /// against by columns (each thread half the weights, all rows).
    /// `cargo test --release -p rewardlens-kernels -- --ignored --nocapture print_model_threading`
    #[test]
    #[ignore]
    fn print_model_threading() {
        let mut rng = Rng::new(7);
        let shapes = [(2048, 1024), (1024, 1024), (1024, 1024), (1024, 2048), (3072, 1024), (3072, 1024), (1024, 3072)];
        let ws: Vec<PackedMatrix> = (0..28)
            .flat_map(|_| shapes)
            .map(|(n, k)| PackedMatrix::pack(&rng.vec(n * k, 0.05), n, k, ScaleLayout::PerGroup(32)).unwrap())
            .collect();
        let macs: usize = ws.iter().map(|w| w.n() * w.k()).sum();
        let kernel = crate::kernel();
        for m in [64, 512] {
            let xs: Vec<Vec<f32>> = [1024, 2048, 3072].iter().map(|&k| rng.vec(m * k, 1.0)).collect();
            let x_for = |k: usize| &xs[k / 1024 - 1];
            let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; m * w.n()]).collect();
            let (mut s0, mut s1) = (Scratch::default(), Scratch::default());
            let time = |f: &mut dyn FnMut()| {
                (0..3)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let one = time(&mut || {
                for (w, o) in ws.iter().zip(outs.iter_mut()) {
                    matmul_with(kernel, x_for(w.k()), m, w, o, &mut s0);
                }
            });
            let rows = time(&mut || {
                for (w, o) in ws.iter().zip(outs.iter_mut()) {
                    let x = x_for(w.k());
                    let half = m / 2;
                    let (oa, ob) = o.split_at_mut(half * w.n());
                    let (xa, xb) = x.split_at(half * w.k());
                    let (sa, sb) = (&mut s0, &mut s1);
                    std::thread::scope(|sc| {
                        sc.spawn(|| matmul_with(kernel, xb, m - half, w, ob, sb));
                        matmul_with(kernel, xa, half, w, oa, sa);
                    });
                }
            });
            let cols = time(&mut || {
                for (w, o) in ws.iter().zip(outs.iter_mut()) {
                    let prepared = prepare(kernel, x_for(w.k()), m, w, &mut s0);
                    let part = Columns::new(o, m, w);
                    let p = part.panels();
                    let (a, b) = part.split_at(p.start + p.len() / 2);
                    let prepared = &prepared;
                    std::thread::scope(|sc| {
                        sc.spawn(move || prepared.multiply(b));
                        prepared.multiply(a);
                    });
                }
            });
            let g = |t: f64| (m * macs) as f64 / t / 1e9;
            println!(
                "m={m} {}: one thread {:.0} ms ({:.0} GMAC/s), two by rows {:.0} ms ({:.0}), two by columns {:.0} ms ({:.0})",
                kernel.name(),
                one * 1e3,
                g(one),
                rows * 1e3,
                g(rows),
                cols * 1e3,
                g(cols)
            );
        }
    }

    /// Information, not a test of speed: `cargo test --release -p rewardlens-kernels -- --ignored --nocapture`.
    /// Every variant this CPU runs, one thread, best of 3.
    #[test]
    #[ignore]
    fn print_native_timings() {
        let (n, k) = (3072, 1024);
        let mut rng = Rng::new(5);
        let wf = rng.vec(n * k, 0.05);
        for (layout, m) in
            [ScaleLayout::PerChannel, ScaleLayout::PerGroup(32)].into_iter().flat_map(|l| [(l, 1), (l, 64), (l, 512)])
        {
            let w = PackedMatrix::pack(&wf, n, k, layout).unwrap();
            let x = rng.vec(m * k, 1.0);
            let mut out = vec![0.0; m * n];
            let mut s = Scratch::default();
            let mut line = format!("{} m={m}:", layout.name());
            for kernel in Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
                let best = (0..3)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        matmul_with(kernel, &x, m, &w, &mut out, &mut s);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                line += &format!(" {} {:.1} GMAC/s,", kernel.name(), (m * n * k) as f64 / best / 1e9);
            }
            println!("{line}");
        }
    }
}
