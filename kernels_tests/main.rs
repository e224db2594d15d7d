//! Every op against the f64 CPU reference (`convirt::reference`), every backward against
//! central finite differences of that reference, every shader through naga's validator and its
//! SPIR-V, MSL, HLSL and GLSL back ends, and the engine's error paths.
//!
//! Runs on whatever adapter the engine picks (`CONVIRT_ADAPTER` / `CONVIRT_BACKEND` choose);
//! in CI that is Mesa's lavapipe.

mod adam;
mod attention;
mod autograd;
mod batchnorm;
mod bert;
mod classify;
mod common;
mod conv;
mod dropout;
mod elementwise;
mod embedding;
mod errors;
mod gemm;
mod infonce;
mod layernorm;
mod permute;
mod pool;
mod probe;
mod profiler;
mod reduce;
mod resnet;
mod shaders;
mod softmax;
mod token_pool;
mod train;
