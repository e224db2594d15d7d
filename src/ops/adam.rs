//! The Adam optimiser (`shaders/adam.wgsl`) with torch.optim.Adam's semantics, and global
//! gradient-norm clipping as torch.nn.utils.clip_grad_norm_ does it.

use super::u32_len;
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "adam",
    wgsl: include_str!("../../shaders/adam.wgsl"),
};

/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 256;
/// Elements one workgroup of `sumsq` reduces (the shader's `WG * PER_INVOCATION`).
const SUMSQ_CHUNK: u32 = WG * 16;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    _pad0: [u32; 2],
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
}

/// Adam with torch.optim.Adam's update (`amsgrad = False`, `maximize = False`): weight decay
/// is L2, added to the gradient (`g = grad + weight_decay * p`), not AdamW's decoupled decay.
///
/// One fused kernel per parameter tensor updates the parameter and both moments in place; all
/// of a step's dispatches go into the current batch, with no synchronisation. One step counter
/// serves every parameter (torch keeps one per parameter; they agree unless a parameter
/// sometimes has no gradient).
///
/// ```no_run
/// # use convirt::{Gpu, Tensor};
/// # use convirt::ops::adam::Adam;
/// # let gpu = Gpu::shared()?;
/// let w = Tensor::param(&gpu, &[1.0, 2.0], &[2])?;
/// let mut adam = Adam::new(&[w.clone()], 1e-4, 1e-6)?;
/// w.mul(&w)?.sum_all()?.backward()?;
/// adam.step(&[w.clone()])?;
/// # Ok::<(), convirt::Error>(())
/// ```
pub struct Adam {
    lr: f32,
    /// Betas and eps in f64, as torch holds them (Python floats): `1 - beta2` from an f32
    /// 0.999 would be 1.3e-5 off.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f32,
    /// Steps taken (torch's `step`).
    step: u64,
    /// Per parameter, in the order given to [`Adam::new`]: the first and second moments.
    state: Vec<(Tensor, Tensor)>,
}

impl Adam {
    /// Adam over `params` (betas 0.9, 0.999, eps 1e-8); zero moments for every parameter,
    /// frozen ones included, so [`Adam::state`] lines up with `params`.
    pub fn new(params: &[Tensor], lr: f32, weight_decay: f32) -> Result<Adam> {
        check_lr(lr)?;
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::Invalid {
                op: "Adam",
                why: format!("weight decay must be finite and >= 0, got {weight_decay}"),
            });
        }
        let mut state = Vec::with_capacity(params.len());
        for p in params {
            p.expect_dtype("Adam", DType::F32)?;
            state.push((
                Tensor::zeros(p.gpu(), p.shape())?,
                Tensor::zeros(p.gpu(), p.shape())?,
            ));
        }
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            state,
        })
    }

    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Changes the learning rate of the following steps (schedules).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update of every parameter that has a gradient; the others (frozen, or unused by
    /// the loss) and their moments are left as they are. `params` must be the tensors given
    /// to [`Adam::new`], in the same order.
    pub fn step(&mut self, params: &[Tensor]) -> Result<()> {
        if params.len() != self.state.len() {
            return Err(Error::Invalid {
                op: "Adam::step",
                why: format!(
                    "built for {} parameters, given {}",
                    self.state.len(),
                    params.len()
                ),
            });
        }
        for (p, (m, _)) in params.iter().zip(&self.state) {
            if p.shape() != m.shape() {
                return Err(Error::Shape {
                    op: "Adam::step",
                    lhs: p.shape().to_vec(),
                    rhs: m.shape().to_vec(),
                    why: "a parameter differs from the one the optimiser was built for".into(),
                });
            }
        }
        self.step += 1;
        // Bias corrections in f64, as torch computes them on the host.
        let t = self.step as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2 = 1.0 - self.beta2.powf(t);
        let mut params_block = Params {
            n: 0,
            offset: 0,
            _pad0: [0; 2],
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay,
            step_size: (self.lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
        };
        for (p, (m, v)) in params.iter().zip(&self.state) {
            let Some(g) = p.grad() else { continue };
            let n = u32_len("Adam::step", p.numel())?;
            params_block.n = n;
            p.gpu().dispatch(&Dispatch {
                kernel: Kernel {
                    shader: SHADER,
                    entry: "step",
                    overrides: &[],
                },
                name: "adam",
                params: bytemuck::bytes_of(&params_block),
                buffers: &[
                    (g.buffer(), Access::Read),
                    (p.buffer(), Access::ReadWrite),
                    (m.buffer(), Access::ReadWrite),
                    (v.buffer(), Access::ReadWrite),
                ],
                // Four elements per invocation (see the shader).
                workgroups: p.gpu().grid(n.div_ceil(4).div_ceil(WG)),
                flops: 14 * n as u64,
                bytes: 28 * n as u64,
            })?;
        }
        Ok(())
    }

    /// The moments `(m, v)` of every parameter, in order: the live tensors, which the next
    /// step updates in place (read them before it).
    pub fn moments(&self) -> Vec<(Tensor, Tensor)> {
        self.state.clone()
    }

    /// What a checkpoint needs: the step count and the moments.
    pub fn state(&self) -> (u64, Vec<(Tensor, Tensor)>) {
        (self.step, self.moments())
    }

    /// Resumes from a checkpoint's [`Adam::state`]. The tensors become the optimiser's own
    /// and are updated in place by later steps.
    pub fn restore(&mut self, step: u64, moments: Vec<(Tensor, Tensor)>) -> Result<()> {
        if moments.len() != self.state.len() {
            return Err(Error::Invalid {
                op: "Adam::restore",
                why: format!(
                    "{} pairs of moments for {} parameters",
                    moments.len(),
                    self.state.len()
                ),
            });
        }
        for ((m, v), (m0, _)) in moments.iter().zip(&self.state) {
            for t in [m, v] {
                t.expect_dtype("Adam::restore", DType::F32)?;
                if t.shape() != m0.shape() {
                    return Err(Error::Shape {
                        op: "Adam::restore",
                        lhs: t.shape().to_vec(),
                        rhs: m0.shape().to_vec(),
                        why: "a moment's shape differs from its parameter's".into(),
                    });
                }
            }
        }
        self.step = step;
        self.state = moments;
        Ok(())
    }
}

fn check_lr(lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid {
            op: "Adam",
            why: format!("the learning rate must be finite and >= 0, got {lr}"),
        })
    }
}

/// torch.nn.utils.clip_grad_norm_: the L2 norm of all gradients of `params` taken together
/// (those without one are skipped); when it exceeds `max_norm` every gradient is multiplied
/// by `max_norm / (norm + 1e-6)`. Returns the norm (before clipping); a NaN or infinite norm
/// scales the gradients by NaN, as torch does by default.
///
/// The norm needs one readback, so this waits for the recorded work: one `sumsq` dispatch
/// per gradient writes per-workgroup sums of squares into one buffer, read back at once and
/// added in f64. The scaled gradients are new tensors that replace the old ones, not scaled
/// in place: a gradient buffer can be shared by several parameters (`add` hands the same
/// gradient to both operands), and scaling it once per parameter would clip it twice.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> Result<f32> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Invalid {
            op: "clip_grad_norm",
            why: format!("max_norm must be >= 0, got {max_norm}"),
        });
    }
    let grads: Vec<(&Tensor, Tensor)> = params
        .iter()
        .filter_map(|p| p.grad().map(|g| (p, g)))
        .collect();
    let Some((first, _)) = grads.first() else {
        return Ok(0.0);
    };
    let gpu = first.gpu();
    let chunks: Vec<u32> = grads
        .iter()
        .map(|(_, g)| Ok(u32_len("clip_grad_norm", g.numel())?.div_ceil(SUMSQ_CHUNK)))
        .collect::<Result<_>>()?;
    let total: u32 = chunks.iter().sum();
    let partials = Tensor::uninit(gpu, &[total as usize], DType::F32, "clip_grad_norm")?;
    let mut offset = 0;
    for ((_, g), &count) in grads.iter().zip(&chunks) {
        let n = g.numel() as u32;
        let block = Params {
            n,
            offset,
            _pad0: [0; 2],
            beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            weight_decay: 0.0,
            step_size: 0.0,
            bc2_sqrt: 0.0,
            one_minus_beta1: 0.0,
            one_minus_beta2: 0.0,
        };
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry: "sumsq",
                overrides: &[],
            },
            name: "clip_grad_norm.sumsq",
            params: bytemuck::bytes_of(&block),
            buffers: &[
                (g.buffer(), Access::Read),
                (partials.buffer(), Access::ReadWrite),
            ],
            workgroups: gpu.grid(count),
            flops: 2 * n as u64,
            bytes: 4 * n as u64,
        })?;
        offset += count;
    }
    let sum: f64 = partials.to_vec()?.iter().map(|&x| x as f64).sum();
    let norm = sum.sqrt() as f32;
    // torch: clamp(max_norm / (norm + 1e-6), max = 1); NaN passes the clamp.
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 || coef.is_nan() {
        no_grad(|| -> Result<()> {
            for (p, g) in &grads {
                let scaled = g.scale(coef)?;
                p.zero_grad();
                p.accumulate_grad(scaled)?;
            }
            Ok(())
        })?;
    }
    Ok(norm)
}
