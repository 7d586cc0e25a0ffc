//! GPU kernels for the reward-model forward pass, through wgpu: Vulkan, Metal and DX12
//! natively, WebGPU in the browser, from the same WGSL. One compute shader per op, each owned by
//! a Rust type that builds its pipeline once ([`kernels`]); every kernel is tested against a
//! CPU reference on random inputs (natively on any adapter, Mesa's lavapipe in CI).
//!
//! [`GpuRewardModel`] chains them into the decoder forward pass for every architecture the CPU
//! engine supports, from the same loaded checkpoint. Not yet done: batching several sequences,
//! splitting buffers larger than one binding, f16 weights, and selection in the CLI and browser.

pub mod context;
pub mod kernels;
pub mod model;

pub use context::{Gpu, GpuBuffer, GpuError};
pub use model::{GpuRewardModel, GpuWeights};
