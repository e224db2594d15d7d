//! Host side of every kernel family: shape checks, the dispatch, the flop and byte counts, and
//! the backward rule, side by side. One file per `shaders/*.wgsl`.

pub mod adam;
pub mod attention;
pub mod batchnorm;
pub mod classify;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod infonce;
pub mod layernorm;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod token_pool;
mod unroll;

pub use elementwise::{Binary, Unary};
pub use gemm::{Activation, Columns, GemmOptions};

use crate::error::{Error, Result};
use crate::gpu::ShaderSource;
use crate::tensor::Tensor;

/// Every shader the engine compiles, as compiled (shared snippets appended, generated
/// variants unrolled): what the portability tests validate and translate.
pub fn all_shaders() -> Vec<ShaderSource> {
    let mut all = vec![
        adam::SHADER,
        batchnorm::SHADER,
        classify::SHADER,
        conv::SHADER,
        dropout::SHADER,
        elementwise::SHADER,
        embedding::SHADER,
        infonce::SHADER,
        layernorm::SHADER,
        permute::SHADER,
        pool::SHADER,
        reduce::SHADER,
        softmax::SHADER,
        token_pool::SHADER,
    ];
    all.extend(attention::AttentionTiling::ALL.map(attention::shader));
    all.extend(gemm::GemmTiling::ALL.map(gemm::shader));
    all
}

/// Whether kernels with a subgroup form use it: on CPU adapters (llvmpipe) whose subgroups are
/// all 8 lanes, the size those forms are written for and where they were measured faster
/// (there a load is gathered lane by lane, a subgroup broadcast is a register permute).
pub(crate) fn subgroup_forms(gpu: &crate::gpu::Gpu) -> bool {
    gpu.is_cpu() && gpu.subgroup_size() == Some(8)
}

/// Invocations per workgroup of a kernel that works one row, channel or group of columns per
/// workgroup: one 8-lane subgroup on CPU adapters, `elsewhere` on GPUs. llvmpipe runs a
/// workgroup's subgroups as fibres on one core and switches all of them at every barrier, and
/// small workgroups leave work for every thread (each call site says what it measured).
pub(crate) fn one_subgroup_on_cpu(gpu: &crate::gpu::Gpu, elsewhere: u32) -> u32 {
    if gpu.is_cpu() {
        8
    } else {
        elsewhere
    }
}

/// The shaders compiled only where the adapter has subgroups (they use subgroup operations;
/// every one has a portable counterpart in [`all_shaders`]).
pub fn subgroup_shaders() -> Vec<ShaderSource> {
    let mut all = vec![infonce::SUBGROUP_SHADER];
    // Only CPU adapters take the subgroup forms, so only their tilings have one compiled.
    all.extend(
        gemm::GemmTiling::CPU
            .into_iter()
            .filter_map(gemm::subgroup_shader),
    );
    all
}

pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape {
            op,
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
            why: "the operands must have the same shape".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_axis(op: &'static str, t: &Tensor, axis: usize) -> Result<()> {
    if axis >= t.rank() {
        return Err(Error::Invalid {
            op,
            why: format!(
                "axis {axis} does not exist in a tensor of shape {:?}",
                t.shape()
            ),
        });
    }
    Ok(())
}

/// Elements as a u32 for a kernel's parameter block.
pub(crate) fn u32_len(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Invalid {
        op,
        why: format!("{n} elements exceed u32 indexing"),
    })
}
