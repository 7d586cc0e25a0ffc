//! GPU kernels for the reward-model forward pass, through wgpu: Vulkan, Metal and DX12
//! natively, WebGPU in the browser, from the same WGSL. One compute shader per op, each owned by
//! a Rust type that builds its pipeline once ([`kernels`]); every kernel is tested against a
//! CPU reference on random inputs (natively on any adapter, Mesa's lavapipe in CI).
//!
//! Status: the kernels exist and are tested; the whole-model forward pass that chains them (and
//! its selection in the browser and CLI) is the next step.

pub mod context;
pub mod kernels;

pub use context::{Gpu, GpuBuffer, GpuError};
