//! Every op against the f64 CPU reference (`convirt::reference`), every backward against
//! central finite differences of that reference, every shader through naga's validator and its
//! SPIR-V, MSL, HLSL and GLSL back ends, and the engine's error paths.
//!
//! Runs on whatever adapter the engine picks (`CONVIRT_ADAPTER` / `CONVIRT_BACKEND` choose);
//! in CI that is Mesa's lavapipe.

mod autograd;
mod batchnorm;
mod common;
mod conv;
mod elementwise;
mod errors;
mod gemm;
mod permute;
mod pool;
mod profiler;
mod reduce;
mod resnet;
mod shaders;
mod softmax;
