//! Where a forward pass spends its time: milliseconds per kind of operation, accumulated on the
//! current thread while [`record`] runs a closure.
//!
//! The clock is the caller's (`performance.now()` in a browser worker, where `std::time` does
//! not exist on wasm32; [`native_clock`] natively), so this module has no platform code. Time is
//! counted exclusively: a span opened inside another (a matmul inside attention) pauses the
//! outer one, so the categories never count a millisecond twice and sum to at most the total.
//! With no recording on the current thread a span costs one thread-local read.
//!
//! Candle's CPU ops run synchronously, so wall time around an op is the op's time; on a GPU
//! backend the figures would only measure kernel launches.

use std::cell::RefCell;

/// A kind of operation in the decoder's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Token-embedding lookup (dequantizing rows of a quantized table).
    Embedding,
    /// RMSNorm (layer norms, q/k norms, the final norm).
    Norm,
    /// Rotary tables and their application to queries and keys.
    Rope,
    /// Attention proper: masks, scores, softmax and the weighted sum of values.
    Attention,
    /// Linear layers (q/k/v/o projections, gate/up/down).
    Matmul,
    /// The MLP's SwiGLU activation (silu(gate) · up).
    Activation,
    /// Reshapes, transposes, concatenations and contiguous copies.
    Copy,
    /// The score head.
    Head,
}

impl Op {
    /// Every kind, in report order.
    pub const ALL: [Op; 8] =
        [Op::Embedding, Op::Norm, Op::Rope, Op::Attention, Op::Matmul, Op::Activation, Op::Copy, Op::Head];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Op::Embedding => "embedding",
            Op::Norm => "rmsnorm",
            Op::Rope => "rope",
            Op::Attention => "attention",
            Op::Matmul => "matmul",
            Op::Activation => "swiglu",
            Op::Copy => "copy",
            Op::Head => "head",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Milliseconds per [`Op`] over one [`record`] call, and the call's whole duration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Indexed like [`Op::ALL`].
    ms: [f64; 8],
    /// Wall time of the recorded closure.
    pub total_ms: f64,
}

impl Profile {
    pub fn ms(&self, op: Op) -> f64 {
        self.ms[op.index()]
    }

    /// Time in no span: residual adds, tensor creation, the caller's own work.
    pub fn other_ms(&self) -> f64 {
        (self.total_ms - self.ms.iter().sum::<f64>()).max(0.0)
    }

    /// `(name, ms)` for every kind, then `("other", ms)`: the shape bench rows carry.
    pub fn rows(&self) -> Vec<(String, f64)> {
        Op::ALL
            .iter()
            .map(|&op| (op.name().to_owned(), self.ms(op)))
            .chain(std::iter::once(("other".to_owned(), self.other_ms())))
            .collect()
    }

    /// Adds another profile's times (several passes of one bench row).
    pub fn add(&mut self, other: &Profile) {
        for (a, b) in self.ms.iter_mut().zip(&other.ms) {
            *a += b;
        }
        self.total_ms += other.total_ms;
    }
}

struct Recording {
    clock: fn() -> f64,
    ms: [f64; 8],
    /// The innermost open span and when it last (re)started.
    current: Option<(Op, f64)>,
}

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// Runs `f`, returning its result and the time its spans on this thread took per [`Op`].
/// `clock` returns milliseconds from any fixed origin. A nested `record` is timed as a whole
/// by the outer one only (the inner returns an empty profile with its total).
pub fn record<R>(clock: fn() -> f64, f: impl FnOnce() -> R) -> (R, Profile) {
    let start = clock();
    let fresh = Recording { clock, ms: [0.0; 8], current: None };
    let outer = RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_some() {
            None
        } else {
            *r = Some(fresh);
            Some(())
        }
    });
    // Ends the recording even if `f` panics, so a later pass is not recorded into it.
    struct Stop(bool);
    impl Drop for Stop {
        fn drop(&mut self) {
            if self.0 {
                RECORDING.with(|r| r.borrow_mut().take());
            }
        }
    }
    let mut stop = Stop(outer.is_some());
    let out = f();
    let ms = if outer.is_some() {
        stop.0 = false;
        RECORDING.with(|r| r.borrow_mut().take()).map(|rec| rec.ms).unwrap_or_default()
    } else {
        [0.0; 8]
    };
    (out, Profile { ms, total_ms: clock() - start })
}

/// Whether a recording is on for this thread.
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

/// Milliseconds since the first call on this process (`std::time::Instant`), for native runs.
#[cfg(not(target_arch = "wasm32"))]
pub fn native_clock() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// Times the enclosing scope as `op` while a recording is on; does nothing otherwise.
#[must_use = "the span times the scope holding it"]
pub struct Span {
    /// The span this one paused, or `None` when none was open; `active` is false off-recording.
    parent: Option<Op>,
    active: bool,
}

/// Opens a span of `op` until the returned guard drops.
pub fn span(op: Op) -> Span {
    RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        let Some(rec) = r.as_mut() else { return Span { parent: None, active: false } };
        let now = (rec.clock)();
        let parent = rec.current.map(|(p, since)| {
            rec.ms[p.index()] += now - since;
            p
        });
        rec.current = Some((op, now));
        Span { parent, active: true }
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        RECORDING.with(|r| {
            let mut r = r.borrow_mut();
            let Some(rec) = r.as_mut() else { return };
            let now = (rec.clock)();
            if let Some((op, since)) = rec.current {
                rec.ms[op.index()] += now - since;
            }
            rec.current = self.parent.map(|p| (p, now));
        });
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    thread_local! {
        static FAKE_NOW: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    }

    fn fake_clock() -> f64 {
        FAKE_NOW.with(|n| n.get())
    }

    fn advance(ms: f64) {
        FAKE_NOW.with(|n| n.set(n.get() + ms));
    }

    /// Nested spans count exclusively: the inner span's time is not the outer's too.
    #[test]
    fn nested_spans_count_self_time() {
        let ((), p) = record(fake_clock, || {
            advance(1.0);
            let _a = span(Op::Attention);
            advance(2.0);
            {
                let _m = span(Op::Matmul);
                advance(5.0);
            }
            advance(3.0);
        });
        assert_eq!(p.ms(Op::Attention), 5.0);
        assert_eq!(p.ms(Op::Matmul), 5.0);
        assert_eq!(p.total_ms, 11.0);
        assert_eq!(p.other_ms(), 1.0);
        assert_eq!(p.rows().len(), 9);
    }

    #[test]
    fn spans_outside_a_recording_do_nothing() {
        {
            let _s = span(Op::Norm);
            advance(4.0);
        }
        assert!(!is_recording());
        let ((), p) = record(fake_clock, || advance(1.0));
        assert_eq!(p.ms(Op::Norm), 0.0);
        assert!(!is_recording());
    }
}
