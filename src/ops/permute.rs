//! Axis permutations of up to 4 axes (`shaders/permute.wgsl`); the backward is the inverse
//! permutation.

use super::u32_len;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "permute",
    wgsl: include_str!("../../shaders/permute.wgsl"),
};

const WG: u32 = 256;
/// Invocations striding along one output row in `permute_rows`.
const ROW_WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
    out_shape: [u32; 4],
    src_stride: [u32; 4],
    /// `permute_vec4`'s reciprocals (see the shader).
    inv: [f32; 4],
}

impl Tensor {
    /// Output axis `i` is input axis `dims[i]` (as `torch.permute`), for 1 to 4 axes.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let op = "permute";
        let rank = self.rank();
        let mut seen = [false; 4];
        let valid = (1..=4).contains(&rank)
            && dims.len() == rank
            && dims
                .iter()
                .all(|&d| d < rank && !std::mem::replace(&mut seen[d], true));
        if !valid {
            return Err(Error::Invalid {
                op,
                why: format!(
                    "{dims:?} is not a permutation of the axes of shape {:?} (1 to 4 axes)",
                    self.shape()
                ),
            });
        }
        self.expect_dtype(op, DType::F32)?;
        let in_shape = self.shape();
        let mut in_stride = vec![1usize; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            in_stride[d] = in_stride[d + 1] * in_shape[d + 1];
        }
        let pad = 4 - rank;
        let mut p = Params {
            n: u32_len(op, self.numel())?,
            _pad: [0; 3],
            out_shape: [1; 4],
            src_stride: [0; 4],
            inv: [0.0; 4],
        };
        let out_shape: Vec<usize> = dims.iter().map(|&d| in_shape[d]).collect();
        for (i, &d) in dims.iter().enumerate() {
            p.out_shape[pad + i] = in_shape[d] as u32;
            p.src_stride[pad + i] = in_stride[d] as u32;
        }
        let y = Tensor::uninit(self.gpu(), &out_shape, DType::F32, op)?;
        // Rows of whole vec4s that stay rows, a vec4 per invocation; other rows of the last
        // output axis, a workgroup each, when they are long enough to keep the workgroup busy
        // (see permute.wgsl).
        let row_len = p.out_shape[3];
        let vec4s = p.n / 4;
        let (entry, wg, workgroups) =
            if p.src_stride[3] == 1 && row_len.is_multiple_of(4) && vec4s < 1 << 24 {
                p.inv = [
                    4.0 / row_len as f32,
                    1.0 / p.out_shape[2] as f32,
                    1.0 / p.out_shape[1] as f32,
                    0.0,
                ];
                ("permute_vec4", WG, self.gpu().grid(vec4s.div_ceil(WG)))
            } else if row_len >= 32 {
                let rows = p.n / row_len.max(1);
                ("permute_rows", ROW_WG, self.gpu().grid(rows))
            } else {
                ("permute", WG, self.gpu().grid(p.n.div_ceil(WG)))
            };
        self.gpu().dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry,
                overrides: &[("WG", wg as f64)],
            },
            name: op,
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
            ],
            workgroups,
            flops: 0,
            bytes: 8 * self.numel() as u64,
        })?;
        let mut inverse = vec![0; rank];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(record(op, y, &[self], move |g, _| {
            Ok(vec![Some(g.permute(&inverse)?)])
        }))
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        if a >= dims.len() || b >= dims.len() {
            return Err(Error::Invalid {
                op: "transpose",
                why: format!(
                    "axes {a} and {b} do not both exist in shape {:?}",
                    self.shape()
                ),
            });
        }
        dims.swap(a, b);
        self.permute(&dims)
    }
}
