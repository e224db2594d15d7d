//! convirt: ConVIRT (contrastive image-report pretraining of medical image encoders) on a
//! small engine of hand-written WGSL kernels dispatched through wgpu, so it trains on any
//! Vulkan, Metal, DX12 or GL device, and on the CPU through Mesa's lavapipe.
//!
//! Layers, from the bottom: [`gpu`] (adapter, device, buffer pool, pipeline cache, batching,
//! profiler), [`tensor`], [`autograd`], [`ops`] (one file per kernel family, forward and
//! backward side by side). [`reference`] holds the f64 CPU reference of every op, used by the
//! tests.

pub mod autograd;
pub mod data;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod models;
pub mod nn;
pub mod ops;
pub mod plot;
pub mod reference;
pub mod tensor;
pub mod train;

pub use autograd::{grad_enabled, no_grad};
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use ops::{Activation, GemmOptions};
pub use tensor::{DType, Tensor};
