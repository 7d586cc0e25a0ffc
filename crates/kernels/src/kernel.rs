//! The GEMM driver and its 4-row × 8-column microkernels.

use crate::pack::{PackedMatrix, KSTEP, NR, PAIR, STEP_BYTES};
use crate::quant::{quantize_groups, quantize_rows, Scratch};

/// Rows per register tile.
const MR: usize = 4;
/// Rows per block: their quantized activations (`kp` bytes each) stay in cache while every
/// weight panel passes over them, and each weight matrix streams from memory once per block.
/// 512 on x86-64, where L2 holds 512 rows of up to 3,072 bytes (a 512-token pass ran 8% faster
/// than with 64 on Sapphire Rapids); elsewhere the most, see [`row_block`].
pub(crate) const ROW_BLOCK: usize = 512;

/// Bytes of quantized activations a row block may hold outside x86-64 (half a 1 MiB L2).
#[cfg(not(target_arch = "x86_64"))]
const BLOCK_BYTES: usize = 512 * 1024;

/// Rows per block for `kp`-value rows of `bytes`-byte activations: [`ROW_BLOCK`] on x86-64;
/// elsewhere as many whole tiles as fit [`BLOCK_BYTES`], at most [`ROW_BLOCK`] (wasm: was 64
/// rows for every shape, so a 512-token pass streamed each weight matrix 8 times).
fn row_block(kp: usize, bytes: usize) -> usize {
    #[cfg(not(target_arch = "x86_64"))]
    {
        (BLOCK_BYTES / (kp * bytes).max(1)).clamp(MR, ROW_BLOCK) / MR * MR
    }
    #[cfg(target_arch = "x86_64")]
    {
        let _ = (kp, bytes);
        ROW_BLOCK
    }
}

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
    /// x86-64 AMX-INT8 (chosen at run time where Linux grants the tile state): `tdpbssd` on
    /// tiles of 16 rows × 2 panels, 4,096 signed products an instruction per panel, each
    /// group's i32 tile folded into f32 with AVX-512. Activations as AVX2's; weights with
    /// scale groups of a multiple of 32 values (Q8_0's included), else the AVX2 tiles.
    X86Amx,
    /// x86-64 AMX-BF16 (chosen at run time where Linux grants the tile state): 8-bit weights
    /// expanded per pair of panels to bf16 with their scales multiplied in, activations rounded
    /// to bf16, `tdpbf16ps` summing in f32 over the whole K (no fold per scale group;
    /// `crate::bf16`).
    X86AmxBf16,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "int8 portable",
            Self::WasmSimd128 => "int8 simd128",
            Self::WasmRelaxedSimd => match relaxed_dot() {
                RelaxedDot::Fused => "int8 relaxed-simd",
                RelaxedDot::Pairwise => "int8 relaxed-simd (pairwise dot)",
            },
            Self::X86Avx2 => "int8 avx2",
            Self::X86Vnni => match vnni() {
                Some(Vnni::Avx512) => "int8 avx512-vnni",
                _ => "int8 avx-vnni",
            },
            Self::X86Amx => "int8 amx",
            Self::X86AmxBf16 => "bf16 amx",
        }
    }

    /// Activation steps across a row's range (the reference check's bound): 7 bits where the
    /// relaxed dot's second operand must keep its top bit clear, 8 for the other per-row
    /// kernels; the grouped ones step by `max|x| / 127` of a group, at most `(hi − lo) / 127` of
    /// the row.
    pub(crate) fn levels(self) -> u8 {
        match self {
            Self::WasmRelaxedSimd | Self::X86Avx2 | Self::X86Vnni | Self::X86Amx => 127,
            _ => 255,
        }
    }

    /// Whether activations are quantized per row and weight scale group, symmetrically, each
    /// group's i32 sum scaled by its own activation scale (the x86-64 kernels), rather than per
    /// row with a zero point (wasm and portable). Per group is as fine as Candle's Q8_0
    /// activation blocks: per row scored the 0.6B shape less accurately than Candle. VNNI stores
    /// `q + 128` (its first operand is unsigned) and subtracts `128 · Σw` per group; AVX2 stores
    /// `q` and multiplies |w| (≤ 128) by `q` with w's sign (|·| ≤ 127), so `vpmaddubsw`'s i16
    /// pair sums stay within ±32,512, exact; AMX multiplies signed bytes as they are.
    pub(crate) fn grouped(self) -> bool {
        matches!(self, Self::X86Avx2 | Self::X86Vnni | Self::X86Amx)
    }

    /// Whether the kernel expands each pair of weight panels (to bf16) before multiplying:
    /// threads should then split a matmul's columns, so that each pair is expanded once, not
    /// once per thread.
    pub fn expands_weights(self) -> bool {
        self == Self::X86AmxBf16
    }

    /// Every variant, for tests that run each one's arithmetic.
    pub const ALL: [Kernel; 7] = [
        Self::Portable,
        Self::WasmSimd128,
        Self::WasmRelaxedSimd,
        Self::X86Avx2,
        Self::X86Vnni,
        Self::X86Amx,
        Self::X86AmxBf16,
    ];

    /// Whether this build on this CPU runs the variant's own microkernel (else it runs as
    /// portable code with the same quantization).
    pub fn runs_here(self) -> bool {
        match self {
            Self::Portable => true,
            Self::WasmSimd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            Self::WasmRelaxedSimd => cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")),
            Self::X86Avx2 => has_avx2(),
            Self::X86Vnni => vnni().is_some(),
            Self::X86Amx => has_amx(),
            Self::X86AmxBf16 => has_amx_bf16(),
        }
    }
}

/// How the relaxed-simd microkernel sums each 4 × 4 byte product into its i32 lanes. The
/// browser's lowering of `i32x4.relaxed_dot_i8x16_i7x16_add` decides which is faster: V8 emits
/// one `vpdpbusd` only where the CPU has AVX-VNNI; elsewhere on x86 five instructions
/// (`vpmaddubsw`, `vpmaddwd` by a splat of 1 it rebuilds each time with two more, `vpaddd`),
/// where the pairwise form below needs three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaxedDot {
    /// `i32x4_relaxed_dot_i8x16_i7x16_add`.
    Fused,
    /// `i16x8_relaxed_dot_i8x16_i7x16` (`vpmaddubsw`), widened by `i32x4_dot_i16x8` with ones
    /// (`vpmaddwd`), then `i32x4_add`. Exact: a pair of 7-bit × 8-bit products stays within
    /// ±32,512, so the i16 sum never saturates.
    Pairwise,
}

/// 0: not probed yet, else `1 + RelaxedDot as u8`.
static RELAXED_DOT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The relaxed-simd dot form this browser runs faster (probed once): `Pairwise` where the fused
/// dot saturates like `pmaddubsw` (the x86 lowering without VNNI), else `Fused`. Builds without
/// relaxed-simd answer `Fused` (unused there).
pub fn relaxed_dot() -> RelaxedDot {
    use std::sync::atomic::Ordering;
    match RELAXED_DOT.load(Ordering::Relaxed) {
        1 => RelaxedDot::Fused,
        2 => RelaxedDot::Pairwise,
        _ => {
            let probed = probe_relaxed_dot();
            RELAXED_DOT.store(1 + probed as u8, Ordering::Relaxed);
            probed
        }
    }
}

/// Overrides the probe (tests and the kernel bench run both forms; both are exact, so results
/// are the same to the bit).
pub fn set_relaxed_dot(dot: RelaxedDot) {
    RELAXED_DOT.store(1 + dot as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Bytes 255 (out of the 7-bit operand's range on purpose) times −128: `vpdpbusd` sums the four
/// products in i32 (−130,560), `vpdpbssd` reads 255 as −1 (512), ARM's dot products do either;
/// `pmaddubsw` saturates each pair to −32,768, leaving −65,536.
fn probe_relaxed_dot() -> RelaxedDot {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    {
        use core::arch::wasm32::*;
        let (w, a) = (std::hint::black_box(i8x16_splat(-128)), std::hint::black_box(u8x16_splat(255)));
        let sum = i32x4_relaxed_dot_i8x16_i7x16_add(w, a, i32x4_splat(0));
        if i32x4_extract_lane::<0>(std::hint::black_box(sum)) == -65_536 {
            return RelaxedDot::Pairwise;
        }
    }
    RelaxedDot::Fused
}

/// The kernel this build (and, on x86-64, this CPU) runs: natively the fastest the CPU has,
/// unless the environment variable `REWARDLENS_INT8_KERNEL` names another that runs here (`amx`,
/// `vnni`, `avx2`, `portable`: for side-by-side measurements, or to step around a CPU or OS
/// problem). Read once.
pub fn kernel() -> Kernel {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let asked = std::env::var("REWARDLENS_INT8_KERNEL").ok().and_then(|name| Kernel::named(&name));
            asked.filter(|k| k.runs_here()).unwrap_or_else(detected)
        })
    }
    #[cfg(target_arch = "wasm32")]
    detected()
}

impl Kernel {
    /// The variant a short name (`REWARDLENS_INT8_KERNEL`'s values) stands for.
    pub fn named(name: &str) -> Option<Kernel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "amx" => Some(Self::X86Amx),
            "amx-bf16" => Some(Self::X86AmxBf16),
            "vnni" => Some(Self::X86Vnni),
            "avx2" => Some(Self::X86Avx2),
            "portable" => Some(Self::Portable),
            _ => None,
        }
    }
}

fn detected() -> Kernel {
    if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) {
        Kernel::WasmRelaxedSimd
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        Kernel::WasmSimd128
    } else if has_amx_bf16() {
        Kernel::X86AmxBf16
    } else if has_amx() {
        Kernel::X86Amx
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

/// Whether this CPU and OS run the AMX-INT8 microkernel: AMX-TILE and AMX-INT8 (CPUID leaf 7,
/// EDX bits 24 and 25), AVX-512 for the fold, and Linux's permission for this process to use
/// the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, asked once: without it the first
/// tile instruction faults).
pub(crate) fn has_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMX.get_or_init(|| {
            vnni() == Some(Vnni::Avx512) && x86::amx::cpu_has_amx_int8() && x86::amx::request_tile_data()
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// Whether this CPU runs `Kernel::X86AmxBf16`: AMX as [`has_amx`], AMX-BF16 and AVX-512 BF16.
pub(crate) fn has_amx_bf16() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        has_amx() && has_avx512_bf16() && crate::bf16::amx::cpu_has_amx_bf16()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// AVX-512 F, BW, DQ, VL and BF16 (bf16 rounding, `crate::bf16`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        vnni() == Some(Vnni::Avx512) && has!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
    prepare(kernel, x, m, w, scratch).multiply(Columns::new(out, m, w));
}

/// As [`matmul_with`] with portable tiles whatever the CPU has: what the tests compare a
/// microkernel against.
#[cfg(test)]
pub(crate) fn matmul_portable(kernel: Kernel, x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], s: &mut Scratch) {
    let prepared = prepare(kernel, x, m, w, s);
    multiply(&prepared, true, Columns::new(out, m, w));
}

/// One matmul's activations, quantized once, for threads that each compute some of its output
/// columns ([`Columns::split_at`]): with few rows, splitting columns halves each thread's weight
/// traffic where splitting rows made every thread stream every weight.
pub struct Prepared<'a> {
    kernel: Kernel,
    m: usize,
    w: &'a PackedMatrix,
    scratch: &'a Scratch,
}

/// Quantizes `x` (`[m, k]`) for `w` with `kernel`'s arithmetic into `scratch`.
///
/// Panics if `x` is not `m × k` (a caller bug).
pub fn prepare<'a>(kernel: Kernel, x: &[f32], m: usize, w: &'a PackedMatrix, scratch: &'a mut Scratch) -> Prepared<'a> {
    assert_eq!(x.len(), m * w.k, "activations: {} values for {m} rows of {}", x.len(), w.k);
    if kernel == Kernel::X86AmxBf16 {
        crate::bf16::prepare(x, m, w, scratch);
    } else if kernel.grouped() {
        quantize_groups(x, m, w.k, w.kp, w.group, kernel == Kernel::X86Vnni, scratch);
    } else {
        quantize_rows(x, m, w.k, w.kp, kernel.levels(), kernel == Kernel::WasmSimd128, scratch);
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if kernel == Kernel::X86Amx && amx_applies(w) {
        x86::amx::arrange_tiles(m, w, scratch);
    }
    Prepared { kernel, m, w, scratch }
}

impl Prepared<'_> {
    /// Computes the output columns `part` stands for.
    ///
    /// Panics if `part` was split for another shape (a caller bug).
    pub fn multiply(&self, part: Columns) {
        multiply(self, false, part)
    }
}

/// Whether the AMX microkernel runs `w`: on this CPU, with scale groups of whole 32s (a tile's
/// K is 32 or 64 bytes).
#[cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(dead_code))]
fn amx_applies(w: &PackedMatrix) -> bool {
    has_amx() && w.group.is_multiple_of(32)
}

/// Columns `panels` (in panels of [`NR`]) of an `[m, n]` output, written by one thread while
/// others write the rest.
pub struct Columns<'o> {
    ptr: *mut f32,
    m: usize,
    n: usize,
    panels: std::ops::Range<usize>,
    _out: std::marker::PhantomData<&'o mut [f32]>,
}

// SAFETY: each `Columns` of one split writes only its own columns of the output it borrows.
unsafe impl Send for Columns<'_> {}

impl Columns<'_> {
    /// Where rows `r0..r0 + rows` × columns of panel `p` onward (`cols`) start, and the
    /// distance between rows, for a tile store into this part.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn tile(&mut self, r0: usize, p: usize, rows: usize, cols: usize) -> (*mut f32, usize) {
        assert!(r0 + rows <= self.m && self.panels.contains(&p) && p * NR + cols <= self.n.min(self.panels.end * NR));
        // SAFETY: in bounds (asserted).
        (unsafe { self.ptr.add(r0 * self.n + p * NR) }, self.n)
    }

    /// Output row `r`, columns of panel `p` onward (`cols` of them, within this part's panels).
    pub(crate) fn at(&mut self, r: usize, p: usize, cols: usize) -> &mut [f32] {
        assert!(r < self.m && self.panels.contains(&p) && p * NR + cols <= self.n.min(self.panels.end * NR));
        // SAFETY: in bounds (asserted); no other part of the split holds these columns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + p * NR), cols) }
    }
}

impl<'o> Columns<'o> {
    /// All of `out` (`[m, n]` for `w`).
    ///
    /// Panics if `out` is not `m × n` (a caller bug).
    pub fn new(out: &'o mut [f32], m: usize, w: &PackedMatrix) -> Self {
        assert_eq!(out.len(), m * w.n, "output: {} values for {m} rows of {}", out.len(), w.n);
        Columns { ptr: out.as_mut_ptr(), m, n: w.n, panels: 0..w.panels, _out: std::marker::PhantomData }
    }

    /// The panels (of [`NR`] columns) this part covers.
    pub fn panels(&self) -> std::ops::Range<usize> {
        self.panels.clone()
    }

    /// This part as two: panels before `panel` (rounded down to a whole pair: x86-64's AVX-512
    /// and AMX tiles read two at a time) and the rest.
    pub fn split_at(self, panel: usize) -> (Self, Self) {
        let cut = (panel / PAIR * PAIR).clamp(self.panels.start, self.panels.end);
        let part = |panels| Columns { ptr: self.ptr, m: self.m, n: self.n, panels, _out: std::marker::PhantomData };
        (part(self.panels.start..cut), part(cut..self.panels.end))
    }
}

fn multiply(prepared: &Prepared, portable_tiles: bool, mut out: Columns) {
    let Prepared { kernel, m, w, scratch } = *prepared;
    assert!(out.m == m && out.n == w.n && out.panels.end <= w.panels, "output part of another shape");
    if m == 0 || out.panels.is_empty() {
        return;
    }
    if kernel == Kernel::X86AmxBf16 {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if !portable_tiles && has_amx_bf16() {
            // SAFETY: AMX-BF16, AVX-512 BF16 and the tile state checked; activations rounded by
            // `prepare`.
            unsafe { crate::bf16::amx::multiply(m, w, &mut out, scratch) };
            return;
        }
        return crate::bf16::multiply_portable(m, w, &mut out, scratch);
    }
    let (grouped, offset) = (kernel.grouped(), kernel == Kernel::X86Vnni);
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !portable_tiles && kernel == Kernel::X86Amx && amx_applies(w) {
        // SAFETY: AMX, its tile state and AVX-512 checked; scale groups of whole 32s; the tiles
        // arranged by `prepare`.
        unsafe { x86::amx::multiply(m, w, &mut out, scratch) };
        return;
    }
    let groups = w.kp / w.group;
    let panel = |p: usize| Panel::of(w, p, offset);
    // AVX-512 VNNI multiplies two panels at once (16 columns in one 512-bit register).
    let pairs = !portable_tiles && kernel == Kernel::X86Vnni && vnni() == Some(Vnni::Avx512);
    let panels = out.panels.clone();
    let block_rows = row_block(w.kp, if kernel == Kernel::WasmSimd128 { 2 } else { 1 });
    for block in (0..m).step_by(block_rows) {
        let block_end = (block + block_rows).min(m);
        let mut p = panels.start;
        while p < panels.end {
            let width = if pairs && p + 1 < panels.end { 2 } else { 1 };
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
                        let dst = out.at(r, p, cols);
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

impl<'a> Panel<'a> {
    /// Panel `p` of `w`, with VNNI's offset corrections if `offset`.
    pub(crate) fn of(w: &'a PackedMatrix, p: usize, offset: bool) -> Self {
        let groups = w.kp / w.group;
        Panel {
            data: &w.data[w.panel_start(p)..(p / PAIR + 1) * PAIR * NR * w.kp],
            scales: &w.scales[p * groups * NR..(p + 1) * groups * NR],
            group_steps: w.group / KSTEP,
            corr: if offset { &w.offset_corr[p * groups * NR..(p + 1) * groups * NR] } else { &[] },
        }
    }

    /// Whether `data` holds `steps` steps (the bound every microkernel asserts).
    pub(crate) fn holds(&self, steps: usize) -> bool {
        steps == 0 || self.data.len() >= (steps - 1) * STEP_BYTES + NR * KSTEP
    }
}

/// One panel of 8 output channels.
pub(crate) struct Panel<'a> {
    /// `kp / 4` steps of `NR × 4` int8 values, [`STEP_BYTES`] apart (from the panel's first).
    pub(crate) data: &'a [i8],
    /// `[group][NR]`
    pub(crate) scales: &'a [f32],
    /// Dot steps per scale group.
    pub(crate) group_steps: usize,
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
        return match relaxed_dot() {
            RelaxedDot::Fused => wasm::relaxed::<false>(rows, panel),
            RelaxedDot::Pairwise => wasm::relaxed::<true>(rows, panel),
        };
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
            (Kernel::X86Avx2 | Kernel::X86Amx, _) if has_avx2() => return unsafe { x86::avx2(rows, panel) },
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
    let groups = panel.scales.len() / NR;
    for g in 0..groups {
        let mut acc = [[0i32; NR]; MR];
        for s in g * panel.group_steps..(g + 1) * panel.group_steps {
            let w = &panel.data[s * STEP_BYTES..s * STEP_BYTES + NR * KSTEP];
            let k0 = s * KSTEP;
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
    use super::{Panel, KSTEP, MR, NR, STEP_BYTES};
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
    /// splatted across the lanes. `PAIRWISE` picks the dot form ([`super::RelaxedDot`]).
    ///
    /// SAFETY: `data` holds `(s0 + steps) * 32` bytes and each row `(s0 + steps) * 4`.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn relaxed_steps<const PAIRWISE: bool>(
        acc: &mut [v128; 2 * MR],
        rows: &[&[u8]; MR],
        data: &[i8],
        s0: usize,
        steps: usize,
    ) {
        // `i32x4_dot_i16x8` by ones, not `i32x4_extadd_pairwise_i16x8`: LLVM fuses the latter
        // with the add back into the fused dot.
        let ones = i16x8_splat(1);
        let dot = |w: v128, a: v128, acc: v128| {
            if PAIRWISE {
                i32x4_add(acc, i32x4_dot_i16x8(i16x8_relaxed_dot_i8x16_i7x16(w, a), ones))
            } else {
                i32x4_relaxed_dot_i8x16_i7x16_add(w, a, acc)
            }
        };
        for s in s0..s0 + steps {
            // Unaligned v128 and 32-bit loads are allowed in wasm.
            let p = data.as_ptr().add(s * STEP_BYTES) as *const v128;
            let (w0, w1) = (v128_load(p), v128_load(p.add(1)));
            for i in 0..MR {
                let a = v128_load32_splat(rows[i].as_ptr().add(s * KSTEP) as *const u32);
                acc[2 * i] = dot(w0, a, acc[2 * i]);
                acc[2 * i + 1] = dot(w1, a, acc[2 * i + 1]);
            }
        }
    }

    #[cfg(target_feature = "relaxed-simd")]
    pub fn relaxed<const PAIRWISE: bool>(rows: [&[u8]; MR], panel: &Panel) -> [[f32; NR]; MR] {
        let gs = panel.group_steps;
        let groups = panel.scales.len() / NR;
        assert!(panel.holds(groups * gs) && rows.iter().all(|r| r.len() >= groups * gs * KSTEP));
        let mut sum = [f32x4_splat(0.0); 2 * MR];
        for g in 0..groups {
            let mut acc = [i32x4_splat(0); 2 * MR];
            // SAFETY: bounds asserted above.
            unsafe { relaxed_steps::<PAIRWISE>(&mut acc, &rows, panel.data, g * gs, gs) };
            scale_add(&mut sum, &acc, group_scales(panel, g));
        }
        unpack(sum)
    }

    /// As `relaxed` with widened values: each i16x8 half of a weight load is 2 columns × 4 values,
    /// and `i32x4_dot_i16x8` leaves each column's sum in two lanes, folded once per group.
    pub fn simd128(rows: [&[u16]; MR], panel: &Panel) -> [[f32; NR]; MR] {
        let gs = panel.group_steps;
        let groups = panel.scales.len() / NR;
        assert!(panel.holds(groups * gs) && rows.iter().all(|r| r.len() >= groups * gs * KSTEP));
        let mut sum = [f32x4_splat(0.0); 2 * MR];
        for g in 0..groups {
            let mut acc = [i32x4_splat(0); 4 * MR];
            for s in g * gs..(g + 1) * gs {
                // SAFETY: as in `relaxed`; rows hold 4 u16 values per step.
                unsafe {
                    let p = panel.data.as_ptr().add(s * STEP_BYTES) as *const v128;
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
    use super::{Panel, TileRow, KSTEP, MR, NR, PAIR_ROWS, STEP_BYTES};
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
        assert!(panel.holds(groups * gs));
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
                let w = _mm256_loadu_si256(panel.data.as_ptr().add(s * STEP_BYTES) as *const __m256i);
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
                        let w = _mm256_loadu_si256(panel.data.as_ptr().add(s * STEP_BYTES) as *const __m256i);
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

    /// Two adjacent panels (16 columns) × 8 rows in 512-bit registers: per step, the pair's 64
    /// bytes (stored together, [`PAIR`](crate::pack::PAIR)) in one register serve all 8 rows, 64 products per `vpdpbusd`. The same integer sums, so the same
    /// results, as the 256-bit tile on each panel.
    ///
    /// SAFETY: the CPU must have AVX-512 F, BW, DQ, VNNI and VL, and AVX2.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vnni,avx512vl")]
    pub unsafe fn avx512_vnni_pair(rows: [TileRow; PAIR_ROWS], panels: [&Panel; 2]) -> [[[f32; NR]; PAIR_ROWS]; 2] {
        let [p0, p1] = panels;
        let (gs, groups) = check(&rows, p0, true);
        assert!(check(&rows, p1, true) == (gs, groups));
        // The pair's steps are stored together: panel 1's 32 bytes follow panel 0's.
        assert!(std::ptr::eq(p1.data.as_ptr(), p0.data.as_ptr().wrapping_add(NR * KSTEP)));
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
                let w = _mm512_loadu_si512(p0.data.as_ptr().add(s * STEP_BYTES) as *const __m512i);
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

    /// AMX-INT8: `tdpbssd` multiplies a tile of 16 rows × `kc` signed activation bytes by one of
    /// `kc / 4` steps × 16 columns' bytes, adding 16 × 16 i32 sums in the tile unit. A pair of
    /// panels' steps (64 bytes: [`PAIR`](crate::pack::PAIR)) are exactly that operand's rows, so
    /// weight tiles load straight from the packed matrix. Each scale group's sums are stored and
    /// folded into f32 with AVX-512 (one FMA a row), while the tile unit already multiplies the
    /// next group into the other set of tiles.
    #[cfg(target_os = "linux")]
    pub mod amx {
        use super::super::{Columns, Panel, TileRow, KSTEP, MR, NR, ROW_BLOCK, STEP_BYTES};
        use super::*;
        use crate::pack::PackedMatrix;
        use crate::quant::Scratch;
        use std::arch::asm;

        /// Rows of an activation tile (the most a tile holds).
        pub const ROWS: usize = 16;

        /// CPUID leaf 7, subleaf 0: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        pub fn cpu_has_amx_int8() -> bool {
            let edx = __cpuid_count(7, 0).edx;
            edx & (1 << 24) != 0 && edx & (1 << 25) != 0
        }

        /// Asks Linux (5.16+) for this process's permission to use the tile data state:
        /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`. Once granted, each thread's first
        /// tile instruction gets its state allocated by the kernel.
        pub fn request_tile_data() -> bool {
            const SYS_ARCH_PRCTL: usize = 158;
            const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
            const XFEATURE_XTILEDATA: usize = 18;
            let ret: isize;
            // SAFETY: a system call that only changes this process's permitted xsave features;
            // `syscall` clobbers rcx and r11.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack)
                );
            }
            ret == 0
        }

        /// The tiles' shapes (palette 1): tmm0–tmm2 the sums of three groups in flight (16 rows
        /// × 16 i32), tmm3 / tmm4 16 rows of `kc` activation bytes and tmm5 / tmm6 a pair of
        /// panels' `kc / 4` steps (64 bytes each), for alternate groups.
        #[repr(C, align(64))]
        struct TileConfig([u8; 64]);

        impl TileConfig {
            fn new(kc: usize) -> Self {
                let mut c = [0u8; 64];
                c[0] = 1;
                let sums = [(0, ROWS, 64), (1, ROWS, 64), (2, ROWS, 64)];
                let operands = [(3, ROWS, kc), (4, ROWS, kc), (5, kc / 4, 64), (6, kc / 4, 64)];
                for (t, rows, bytes) in sums.into_iter().chain(operands) {
                    c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(bytes as u16).to_le_bytes());
                    c[48 + t] = rows as u8;
                }
                Self(c)
            }
        }

        /// A 64-byte aligned 16 × 16 block of i32 sums (one cache line a row).
        #[repr(C, align(64))]
        struct Block([[i32; 16]; ROWS]);

        /// Pads the quantized activations to whole 16-row tiles (the rows past `m` hold stale
        /// or zero bytes; their sums are dropped) and copies each tile's chunks of K into one
        /// contiguous run (`Scratch::tiles`), read in order from L2 as the pairs of panels pass
        /// over a row block.
        pub fn arrange_tiles(m: usize, w: &PackedMatrix, s: &mut Scratch) {
            let groups = w.kp / w.group;
            let padded = m.div_ceil(ROWS) * ROWS;
            s.q8.resize(s.q8.len().max(padded * w.kp), 0);
            s.group_scales.resize(s.group_scales.len().max(padded * groups), 0.0);
            let kc = chunk(w);
            s.tiles.resize_zeroed(padded * w.kp);
            for (t, tile) in s.tiles.chunks_exact_mut(ROWS * w.kp).enumerate() {
                for (c, chunk) in tile.chunks_exact_mut(ROWS * kc).enumerate() {
                    for (i, row) in chunk.chunks_exact_mut(kc).enumerate() {
                        let at = (t * ROWS + i) * w.kp + c * kc;
                        row.copy_from_slice(&s.q8[at..at + kc]);
                    }
                }
            }
        }

        /// K bytes a tile multiplies: 64 (a tile's widest row) where the scale groups allow.
        fn chunk(w: &PackedMatrix) -> usize {
            if w.group.is_multiple_of(64) {
                64
            } else {
                32
            }
        }

        /// `Kernel::X86Amx`'s part of a matmul, activations quantized (signed, per row and group)
        /// and arranged by `arrange_tiles`: 16-row tiles over pairs of panels, a last odd panel
        /// by AVX2 tiles.
        ///
        /// SAFETY: the CPU has AMX-INT8 and AVX-512 F/BW/DQ/VL and this process the tile state
        /// (`has_amx`); `w.group` is a multiple of 32.
        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")]
        pub unsafe fn multiply(m: usize, w: &PackedMatrix, out: &mut Columns, s: &Scratch) {
            let groups = w.kp / w.group;
            let kc = chunk(w);
            assert!(s.tiles.len() >= m.div_ceil(ROWS) * ROWS * w.kp, "activation tiles not arranged");
            let config = TileConfig::new(kc);
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            let mut blocks = [Block([[0; 16]; ROWS]), Block([[0; 16]; ROWS]), Block([[0; 16]; ROWS])];
            let panels = out.panels.clone();
            for start in (0..m).step_by(ROW_BLOCK) {
                let end = (start + ROW_BLOCK).min(m);
                let mut p = panels.start;
                while p + 1 < panels.end {
                    let pair_of = [&Panel::of(w, p, false), &Panel::of(w, p + 1, false)];
                    for r0 in (start..end).step_by(ROWS) {
                        let q = &s.tiles[r0 * w.kp..(r0 + ROWS) * w.kp];
                        let scales = &s.group_scales[r0 * groups..(r0 + ROWS) * groups];
                        // The first row tile over a pair pulls the next pair's weights toward
                        // L2 (from memory, each is read once a row block).
                        let next = (r0 == start && p + 3 < panels.end).then(|| Panel::of(w, p + 2, false).data);
                        let sums = pair(q, w.kp, scales, pair_of, kc, next, &mut blocks);
                        let cols = (2 * NR).min(w.n - p * NR);
                        for (i, row) in sums.iter().enumerate().take(end - r0) {
                            out.at(r0 + i, p, cols).copy_from_slice(&row[..cols]);
                        }
                    }
                    p += 2;
                }
                if p < panels.end {
                    // The last panel of an odd count: AVX2 tiles on the same signed bytes.
                    let panel = Panel::of(w, p, false);
                    for r0 in (start..end).step_by(MR) {
                        let rows = MR.min(end - r0);
                        let tile_rows: [TileRow; MR] = std::array::from_fn(|i| {
                            let r = if i < rows { r0 + i } else { r0 };
                            TileRow {
                                q: &s.q8[r * w.kp..(r + 1) * w.kp],
                                scales: &s.group_scales[r * groups..(r + 1) * groups],
                            }
                        });
                        let sums = avx2(tile_rows, &panel);
                        let cols = NR.min(w.n - p * NR);
                        for (i, row) in sums.iter().enumerate().take(rows) {
                            out.at(r0 + i, p, cols).copy_from_slice(&row[..cols]);
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }

        /// Starts group `g` (`group` K values, in `kc`-byte chunks) of 16 activation rows (`q`: a
        /// row tile of `Scratch::tiles`) times a pair of panels (`b`, their first step) in the
        /// tile unit: sums in tile `g % 3`, operands in set `g % 2` (see `TileConfig`).
        ///
        /// SAFETY: as `pair`, whose bounds cover every load.
        #[inline(always)]
        unsafe fn issue(q: *const u8, b: *const i8, g: usize, group: usize, kc: usize) {
            macro_rules! tiles {
                ($c:literal, $a:literal, $b:literal) => {{
                    asm!(concat!("tilezero ", $c), options(nostack, nomem));
                    for k in (g * group..(g + 1) * group).step_by(kc) {
                        asm!(
                            concat!("tileloadd ", $a, ", [{a} + {lda}*1]"),
                            concat!("tileloadd ", $b, ", [{b} + {ldb}*1]"),
                            concat!("tdpbssd ", $c, ", ", $a, ", ", $b),
                            a = in(reg) q.add(k * ROWS),
                            lda = in(reg) kc,
                            b = in(reg) b.add(k / KSTEP * STEP_BYTES),
                            ldb = in(reg) STEP_BYTES,
                            options(nostack, readonly)
                        );
                    }
                }};
            }
            match (g % 3, g % 2) {
                (0, 0) => tiles!("tmm0", "tmm3", "tmm5"),
                (0, _) => tiles!("tmm0", "tmm4", "tmm6"),
                (1, 0) => tiles!("tmm1", "tmm3", "tmm5"),
                (1, _) => tiles!("tmm1", "tmm4", "tmm6"),
                (_, 0) => tiles!("tmm2", "tmm3", "tmm5"),
                (_, _) => tiles!("tmm2", "tmm4", "tmm6"),
            }
        }

        /// Stores group `g`'s 16 × 16 sums (tile `g % 3`) at `c`.
        ///
        /// SAFETY: `c` is a `Block`.
        #[inline(always)]
        unsafe fn store(g: usize, c: *mut i32) {
            match g % 3 {
                0 => asm!("tilestored [{c} + {ldc}*1], tmm0", c = in(reg) c, ldc = in(reg) 64usize, options(nostack)),
                1 => asm!("tilestored [{c} + {ldc}*1], tmm1", c = in(reg) c, ldc = in(reg) 64usize, options(nostack)),
                _ => asm!("tilestored [{c} + {ldc}*1], tmm2", c = in(reg) c, ldc = in(reg) 64usize, options(nostack)),
            }
        }

        /// 16 rows (`q`: their tile of `Scratch::tiles`; `scales`: their `[row][group]` scales)
        /// × a pair of panels: group `g + 1` multiplied in the tile unit while group `g`'s sums
        /// are folded as the portable code does: `fma((i32 → f32), weight scale × row scale, sum)`.
        ///
        /// SAFETY: as `run`, with its tile configuration loaded.
        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")]
        unsafe fn pair(
            q: &[u8],
            kp: usize,
            scales: &[f32],
            [p0, p1]: [&Panel; 2],
            kc: usize,
            prefetch: Option<&[i8]>,
            blocks: &mut [Block; 3],
        ) -> [[f32; 16]; ROWS] {
            let groups = p0.scales.len() / NR;
            let group = p0.group_steps * KSTEP;
            assert!(group.is_multiple_of(kc) && groups * group == kp);
            assert!(q.len() >= ROWS * kp && scales.len() >= ROWS * groups);
            // Weight tiles read both panels' steps: 64 bytes from panel 0's, for every step.
            assert!(std::ptr::eq(p1.data.as_ptr(), p0.data.as_ptr().wrapping_add(NR * KSTEP)));
            assert!(p1.holds(kp / KSTEP) && p1.scales.len() >= groups * NR);
            let (a, b) = (q.as_ptr(), p0.data.as_ptr());
            let block = |blocks: &mut [Block; 3], g: usize| blocks[g % 3].0.as_mut_ptr() as *mut i32;
            // The f32 sums live in memory (L1): in registers, with the fold's 16 products and
            // conversions, they were spilled anyway.
            let mut out = [[0.0f32; 16]; ROWS];
            // Three stages in flight: group g + 2 multiplying, g + 1's sums being stored, g's
            // folded (a store straight after its multiply, or a fold straight after its store,
            // waited for the tile unit and left the vector units idle).
            issue(a, b, 0, group, kc);
            if groups > 1 {
                issue(a, b, 1, group, kc);
            }
            store(0, block(blocks, 0));
            for g in 0..groups {
                if g + 2 < groups {
                    issue(a, b, g + 2, group, kc);
                }
                if g + 1 < groups {
                    store(g + 1, block(blocks, g + 1));
                }
                let lo = _mm256_loadu_ps(p0.scales.as_ptr().add(g * NR));
                let hi = _mm256_loadu_ps(p1.scales.as_ptr().add(g * NR));
                let scale = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
                if let Some(next) = prefetch {
                    // This group's share: a pair's `group` K values are `16 · group` bytes.
                    let bytes = &next[(g * group * 2 * NR).min(next.len())..((g + 1) * group * 2 * NR).min(next.len())];
                    for line in bytes.chunks(64) {
                        _mm_prefetch::<_MM_HINT_T1>(line.as_ptr());
                    }
                }
                fold(&blocks[g % 3], scale, scales.as_ptr().add(g), groups, &mut out);
            }
            out
        }

        /// `out[i] = fma(block[i] → f32, scale × row_scales[i · stride], out[i])` for the 16 rows.
        ///
        /// SAFETY: AVX-512 F; `row_scales` readable at `i · stride` for every row.
        #[target_feature(enable = "avx512f")]
        #[inline(never)]
        unsafe fn fold(
            block: &Block,
            scale: __m512,
            row_scales: *const f32,
            stride: usize,
            out: &mut [[f32; 16]; ROWS],
        ) {
            for (i, row) in out.iter_mut().enumerate() {
                let acc = _mm512_cvtepi32_ps(_mm512_load_si512(block.0[i].as_ptr() as *const __m512i));
                let s = _mm512_mul_ps(scale, _mm512_set1_ps(*row_scales.add(i * stride)));
                _mm512_storeu_ps(row.as_mut_ptr(), _mm512_fmadd_ps(acc, s, _mm512_loadu_ps(row.as_ptr())));
            }
        }
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
