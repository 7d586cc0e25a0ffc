//! The browser app: a Leptos page (`ui`) and a Web Worker (`worker`) that runs the engine of
//! `rewardlens-models` compiled to wasm32 with simd128. The page and the worker talk through
//! [`protocol`]; deep links, exports and presets are plain Rust, tested natively.

pub mod export;
pub mod pipeline;
pub mod presets;
pub mod protocol;
pub mod share;
#[cfg(target_arch = "wasm32")]
pub mod stage;
#[cfg(target_arch = "wasm32")]
pub mod ui;
pub mod worker;
