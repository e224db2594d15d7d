//! Embedding lookup (`shaders/embedding.wgsl`): rows of a `[V, D]` table gathered by token ids
//! that come from the tokenizer on the host, and its backward, a scatter-add into the table's
//! gradient that is deterministic and needs no f32 atomics.

use super::u32_len;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{numel, DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "embedding",
    wgsl: include_str!("../../shaders/embedding.wgsl"),
};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    first: u32,
    cap: u32,
}

/// Rows of `weight` (`[V, D]`) picked by token `ids`, as `[shape.., D]`: PyTorch's
/// `nn.Embedding`, for BERT's word, position and token-type embeddings. `ids` has one id per
/// element of `shape` (row-major); an id `>= V` is an error naming it.
///
/// The gradient of `weight` is a scatter-add of the output gradient's rows into the rows of
/// their ids, made deterministic, no f32 atomics needed: the host groups the token positions
/// by id (a stable counting sort, giving offsets and positions in CSR form), and one
/// workgroup per vocabulary row sums its positions' gradient rows in increasing position
/// order; rows of ids that never occur get zeros. The same ids give bit-identical gradients
/// on every run and every adapter that rounds the same way.
///
/// ```no_run
/// use convirt::{ops::embedding::embedding, Gpu, Tensor};
/// let gpu = Gpu::shared()?;
/// let table = Tensor::param(&gpu, &[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2])?;
/// let x = embedding(&table, &[2, 0, 2], &[1, 3])?;
/// assert_eq!(x.shape(), [1, 3, 2]);
/// assert_eq!(x.to_vec()?, vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn embedding(weight: &Tensor, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
    let op = "embedding";
    let &[vocab, dim] = weight.shape() else {
        return Err(Error::Shape {
            op,
            lhs: weight.shape().to_vec(),
            rhs: shape.to_vec(),
            why: "the weight must be a [V, D] table".into(),
        });
    };
    if ids.len() != numel(shape) {
        return Err(Error::Shape {
            op,
            lhs: vec![ids.len()],
            rhs: shape.to_vec(),
            why: format!(
                "{} token ids cannot fill a shape of {} elements",
                ids.len(),
                numel(shape)
            ),
        });
    }
    weight.expect_dtype(op, DType::F32)?;
    if let Some((k, &id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        return Err(Error::Invalid {
            op,
            why: format!(
                "token id {id} (position {k}) is out of range for a vocabulary of V = {vocab} rows"
            ),
        });
    }
    let p = Params {
        rows: u32_len(op, ids.len())?,
        cols: u32_len(op, dim)?,
        first: 0,
        cap: 0,
    };
    // Offsets into the table are id * D in u32 arithmetic.
    u32_len(op, weight.numel())?;
    let mut out_shape = shape.to_vec();
    out_shape.push(dim);
    let y = Tensor::uninit(weight.gpu(), &out_shape, DType::F32, op)?;
    let gpu = weight.gpu();
    let idx = gpu.upload(bytemuck::cast_slice(ids), op, shape)?;
    let n = (ids.len() * dim) as u64;
    gpu.dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry: "gather",
            overrides: &[("WG", WG as f64)],
        },
        name: op,
        params: bytemuck::bytes_of(&p),
        buffers: &[
            (weight.buffer(), Access::Read),
            (y.buffer(), Access::ReadWrite),
            (idx.raw(), Access::Read),
        ],
        workgroups: gpu.grid(p.rows),
        flops: 0,
        bytes: 8 * n + 4 * ids.len() as u64,
    })?;
    let ids = ids.to_vec();
    Ok(record(op, y, &[weight], move |g, _| {
        Ok(vec![Some(scatter(g, &ids, vocab, dim)?)])
    }))
}

/// Token positions grouped by id: `offsets` (`V + 1` entries) and `positions`, so the
/// positions holding id `v` are `positions[offsets[v]..offsets[v + 1]]`, in increasing order
/// (a stable counting sort).
fn group_by_id(ids: &[u32], vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; vocab + 1];
    for &id in ids {
        offsets[id as usize + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut cursor = offsets.clone();
    let mut positions = vec![0u32; ids.len()];
    for (k, &id) in ids.iter().enumerate() {
        let c = &mut cursor[id as usize];
        positions[*c as usize] = k as u32;
        *c += 1;
    }
    (offsets, positions)
}

/// The table's gradient `[V, D]` from the output gradient `g` (`[.., D]`): one dispatch, or
/// more where one id occurs so often that summing its rows would take an invocation past the
/// adapter's loop budget (see [`crate::Gpu::loop_budget`]; on llvmpipe, token type 0 at batch
/// 32 x 512 tokens would).
fn scatter(g: &Tensor, ids: &[u32], vocab: usize, dim: usize) -> Result<Tensor> {
    let op = "embedding_backward";
    let (offsets, positions) = group_by_id(ids, vocab);
    let gpu = g.gpu();
    // An invocation runs ceil(D / WG) column rounds, each over the slice's occurrences.
    let rounds = dim.div_ceil(WG as usize).max(1);
    let cap = (gpu.loop_budget() / rounds)
        .saturating_sub(1)
        .clamp(1, u32::MAX as usize);
    let most = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as usize;
    let dw = Tensor::uninit(gpu, &[vocab, dim], DType::F32, op)?;
    let offsets = gpu.upload(bytemuck::cast_slice(&offsets), op, &[vocab + 1])?;
    let positions = gpu.upload(bytemuck::cast_slice(&positions), op, &[ids.len()])?;
    for first in (0..most.max(1)).step_by(cap) {
        let p = Params {
            rows: u32_len(op, vocab)?,
            cols: u32_len(op, dim)?,
            first: first as u32,
            cap: cap as u32,
        };
        let n = (ids.len().min(cap * vocab) * dim) as u64;
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry: "scatter",
                overrides: &[("WG", WG as f64), ("ACCUMULATE", (first > 0) as u8 as f64)],
            },
            name: op,
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (g.buffer(), Access::Read),
                (dw.buffer(), Access::ReadWrite),
                (offsets.raw(), Access::Read),
                (positions.raw(), Access::Read),
            ],
            workgroups: gpu.grid(p.rows),
            flops: n,
            bytes: 4 * n + 4 * (vocab * dim) as u64 + 4 * (vocab + 1 + ids.len()) as u64,
        })?;
    }
    Ok(dw)
}
