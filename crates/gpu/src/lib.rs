//! GPU kernels for the reward-model forward pass, through wgpu: Vulkan, Metal and DX12
//! natively, WebGPU in the browser, from the same WGSL. One compute shader per op, each owned by
//! a Rust type that builds its pipeline once ([`kernels`]); every kernel is tested against a
//! CPU reference on random inputs (natively on any adapter, Mesa's lavapipe in CI).
//!
//! [`GpuRewardModel`] chains them into the decoder forward pass for every architecture the CPU
//! engine supports, from the same loaded checkpoint, with weights in f32, f16, Q8_0 or Q4_0
//! (dequantized inside the matmul), packed batches, and buffers split to the device's binding
//! limits. Natively it implements the engine's `ForwardPass`, so the CLI and server run it
//! through the same `RewardModel`; the browser worker calls its async `forward` directly.

pub mod context;
pub mod kernels;
pub mod model;

pub use context::{BufferKind, Gpu, GpuBuffer, GpuError, GpuMemory, GpuOptions, WeightUpload};
pub use kernels::WeightFormat;
pub use model::GpuRewardModel;
