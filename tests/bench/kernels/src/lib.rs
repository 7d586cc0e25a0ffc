//! Exports for `kernels.html`: `setup_*` draws random operands of one shape, `run_*` multiplies
//! them `iters` times (the page times it), so the figures are the kernels' alone, outside a model.

use rewardlens_kernels::attention::{causal_attention, AttentionScratch, AttentionShape, CausalMask};
use rewardlens_kernels::{
    f32_gemm, kernel, matmul, quantize_rows_for_bench, relaxed_dot, set_relaxed_dot, Kernel, PackedMatrix, RelaxedDot, ScaleLayout, Scratch,
};
use std::cell::RefCell;

struct Int8Case {
    x: Vec<f32>,
    m: usize,
    w: PackedMatrix,
    out: Vec<f32>,
    scratch: Scratch,
}

struct F32Case {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    m: usize,
    n: usize,
    k: usize,
}

struct AttentionCase {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    shape: AttentionShape,
    span: [(usize, usize); 1],
    block: usize,
    scratch: AttentionScratch,
}

thread_local! {
    static ATTENTION: RefCell<Option<AttentionCase>> = const { RefCell::new(None) };
    static INT8: RefCell<Option<Int8Case>> = const { RefCell::new(None) };
    static F32: RefCell<Option<F32Case>> = const { RefCell::new(None) };
    static QUANTIZE: RefCell<Option<(Vec<f32>, usize, usize, Scratch)>> = const { RefCell::new(None) };
}

fn values(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The relaxed-simd dot form this browser was probed to run (1: fused, 2: pairwise; simd128
/// builds: 0).
#[no_mangle]
pub extern "C" fn probed_relaxed_dot() -> u32 {
    if kernel() != Kernel::WasmRelaxedSimd {
        return 0;
    }
    match relaxed_dot() {
        RelaxedDot::Fused => 1,
        RelaxedDot::Pairwise => 2,
    }
}

/// Sets the relaxed-simd dot form the int8 kernel runs (1: fused, 2: pairwise).
#[no_mangle]
pub extern "C" fn use_relaxed_dot(form: u32) {
    set_relaxed_dot(if form == 2 { RelaxedDot::Pairwise } else { RelaxedDot::Fused });
}

/// `x (m × k) · Wᵀ (W: n × k)`; `group` 0: per-channel scales, else per-group (32: Q8_0's).
/// Returns 0, or 1 if the weights cannot be packed.
#[no_mangle]
pub extern "C" fn setup_int8(m: usize, n: usize, k: usize, group: usize) -> u32 {
    let mut seed = 7;
    let w = values(n * k, &mut seed);
    let layout = if group == 0 { ScaleLayout::PerChannel } else { ScaleLayout::PerGroup(group) };
    let Ok(w) = PackedMatrix::pack(&w, n, k, layout) else { return 1 };
    let x = values(m * k, &mut seed);
    INT8.with(|c| *c.borrow_mut() = Some(Int8Case { x, m, w, out: vec![0.0; m * n], scratch: Scratch::default() }));
    0
}

#[no_mangle]
pub extern "C" fn run_int8(iters: usize) -> f32 {
    INT8.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return f32::NAN };
        for _ in 0..iters {
            matmul(&c.x, c.m, &c.w, &mut c.out, &mut c.scratch);
        }
        c.out[0]
    })
}

/// Activations of `m` rows of `k` for the row quantizer alone.
#[no_mangle]
pub extern "C" fn setup_quantize(m: usize, k: usize) {
    let mut seed = 17;
    QUANTIZE.with(|c| *c.borrow_mut() = Some((values(m * k, &mut seed), m, k, Scratch::default())));
}

/// The relaxed-simd build's row quantizer `iters` times, vector path (1) or scalar (0).
#[no_mangle]
pub extern "C" fn run_quantize(iters: usize, vector: u32) -> u32 {
    QUANTIZE.with(|c| {
        let mut c = c.borrow_mut();
        let Some((x, m, k, s)) = c.as_mut() else { return 0 };
        (0..iters).map(|_| quantize_rows_for_bench(x, *m, *k, vector == 1, s)).fold(0, u32::wrapping_add)
    })
}

/// `a (m × k) · b (k × n)`.
#[no_mangle]
pub extern "C" fn setup_f32(m: usize, n: usize, k: usize) {
    let mut seed = 11;
    let (a, b) = (values(m * k, &mut seed), values(k * n, &mut seed));
    F32.with(|c| *c.borrow_mut() = Some(F32Case { a, b, c: vec![0.0; m * n], m, n, k }));
}

#[no_mangle]
pub extern "C" fn run_f32(iters: usize) -> f32 {
    F32.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return f32::NAN };
        for _ in 0..iters {
            f32_gemm::gemm(&c.a, c.k, &c.b, c.n, &mut c.c, c.m, c.n, c.k);
        }
        c.c[0]
    })
}

/// One layer's causal attention of the 0.6B shape (8 kv heads, 2 query heads each, head_dim 128)
/// over one sequence of `t` tokens, query blocks of `block`.
#[no_mangle]
pub extern "C" fn setup_attention(t: usize, block: usize) {
    let mut seed = 13;
    let shape = AttentionShape { b: 1, kv_heads: 8, rep: 2, t, hd: 128 };
    let q = values(shape.kv_heads * shape.rep * t * shape.hd, &mut seed);
    let (k, v) = (values(shape.kv_heads * t * shape.hd, &mut seed), values(shape.kv_heads * t * shape.hd, &mut seed));
    let out = vec![0.0; q.len()];
    let case = AttentionCase { q, k, v, out, shape, span: [(0, t)], block, scratch: AttentionScratch::default() };
    ATTENTION.with(|c| *c.borrow_mut() = Some(case));
}

#[no_mangle]
pub extern "C" fn run_attention(iters: usize) -> f32 {
    ATTENTION.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return f32::NAN };
        let scale = 1.0 / (c.shape.hd as f32).sqrt();
        for _ in 0..iters {
            let mask = CausalMask { spans: &c.span, past: 0 };
            causal_attention(&c.q, &c.k, &c.v, &mut c.out, c.shape, mask, c.block, scale, &mut c.scratch);
        }
        c.out[0]
    })
}
