//! `Tensor`: a shape, a dtype and a pooled device buffer, plus what autograd needs.
//! Layouts are contiguous row-major; ops that reshape share the buffer.

use crate::autograd::{self, Node};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, PooledBuffer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Element type of a tensor's storage. Kernels compute in f32 today; `F16` is reserved for
/// storage on adapters with `SHADER_F16`, `U32` holds indices (argmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
}

pub(crate) struct Inner {
    gpu: Arc<Gpu>,
    storage: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
    /// Leaves only: whether a gradient is accumulated into `grad`.
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    pub(crate) node: Option<Arc<Node>>,
}

/// A tensor on the device. Cloning is cheap (shared).
///
/// ```no_run
/// use convirt::{Gpu, Tensor};
/// let gpu = Gpu::shared()?;
/// let x = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.0, -4.0], &[2, 2])?.requires_grad(true);
/// let y = x.relu()?.sum_all()?;
/// y.backward()?;
/// assert_eq!(x.grad().unwrap().to_vec()?, vec![1.0, 0.0, 1.0, 0.0]);
/// # Ok::<(), convirt::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?}", self.shape(), self.dtype())?;
        if self.requires_grad_flag() {
            write!(f, ", requires_grad")?;
        }
        write!(f, ")")
    }
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Uploads `data` as an f32 tensor of `shape`.
    pub fn from_slice(gpu: &Arc<Gpu>, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "Tensor::from_slice",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                why: format!(
                    "{} values cannot fill a tensor of {} elements",
                    data.len(),
                    numel(shape)
                ),
            });
        }
        let buf = gpu.upload(bytemuck::cast_slice(data), "Tensor::from_slice", shape)?;
        Ok(Tensor::from_parts(
            gpu,
            buf,
            shape.to_vec(),
            DType::F32,
            None,
        ))
    }

    /// Uploads `data` as a u32 tensor of `shape` (indices, token ids).
    pub fn from_u32(gpu: &Arc<Gpu>, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "Tensor::from_u32",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                why: "value count differs from the shape's element count".into(),
            });
        }
        let buf = gpu.upload(bytemuck::cast_slice(data), "Tensor::from_u32", shape)?;
        Ok(Tensor::from_parts(
            gpu,
            buf,
            shape.to_vec(),
            DType::U32,
            None,
        ))
    }

    /// A trainable leaf: an f32 tensor whose gradient is accumulated by `backward`.
    pub fn param(gpu: &Arc<Gpu>, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(gpu, data, shape)?.requires_grad(true))
    }

    /// A tensor whose contents are whatever the pool hands out: only for op outputs that the
    /// kernel writes completely.
    pub(crate) fn uninit(
        gpu: &Arc<Gpu>,
        shape: &[usize],
        dtype: DType,
        op: &'static str,
    ) -> Result<Tensor> {
        let bytes = (numel(shape) * dtype.size()) as u64;
        let buf = gpu.alloc(bytes, op, shape)?;
        Ok(Tensor::from_parts(gpu, buf, shape.to_vec(), dtype, None))
    }

    pub(crate) fn from_parts(
        gpu: &Arc<Gpu>,
        buf: PooledBuffer,
        shape: Vec<usize>,
        dtype: DType,
        node: Option<Arc<Node>>,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            gpu: Arc::clone(gpu),
            storage: Arc::new(buf),
            shape,
            dtype,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
            node,
        }))
    }

    /// The same storage under another shape and autograd node (views, outputs of ops).
    pub(crate) fn with_node(&self, shape: Vec<usize>, node: Option<Arc<Node>>) -> Tensor {
        Tensor(Arc::new(Inner {
            gpu: Arc::clone(&self.0.gpu),
            storage: Arc::clone(&self.0.storage),
            shape,
            dtype: self.0.dtype,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
            node,
        }))
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.0.gpu
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device buffer, for dispatching kernels of your own through [`Gpu::dispatch`]. It can
    /// be larger than the tensor (pool size classes); the tensor is its first bytes.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.0.storage.raw()
    }

    /// Whether both tensors are views of one buffer.
    pub(crate) fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn bytes(&self) -> u64 {
        (self.numel() * self.0.dtype.size()) as u64
    }

    /// Overwrites the values of an f32 tensor in place (loading weights into a built model,
    /// perturbing a parameter); ops recorded before keep the values they read.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype("Tensor::write", DType::F32)?;
        if data.len() != self.numel() {
            return Err(Error::Shape {
                op: "Tensor::write",
                lhs: vec![data.len()],
                rhs: self.shape().to_vec(),
                why: "value count differs from the tensor's element count".into(),
            });
        }
        self.0.gpu.write(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// Downloads an f32 tensor (flushes pending work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype("to_vec", DType::F32)?;
        let bytes = self.0.gpu.read(self.buffer(), self.bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Downloads a u32 tensor.
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        self.expect_dtype("to_vec_u32", DType::U32)?;
        let bytes = self.0.gpu.read(self.buffer(), self.bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The single value of a one-element f32 tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::Invalid {
                op: "item",
                why: format!("needs a one-element tensor, got shape {:?}", self.shape()),
            });
        }
        Ok(self.to_vec()?[0])
    }

    pub(crate) fn expect_dtype(&self, op: &'static str, want: DType) -> Result<()> {
        if self.dtype() != want {
            return Err(Error::Invalid {
                op,
                why: format!(
                    "expects {want:?} data, got a {:?} tensor of shape {:?}",
                    self.dtype(),
                    self.shape()
                ),
            });
        }
        Ok(())
    }

    /// Marks a leaf as trainable (or frozen: no gradient is computed or stored for it).
    /// Outputs of ops decide this themselves from their inputs.
    pub fn requires_grad(self, on: bool) -> Tensor {
        self.set_requires_grad(on);
        self
    }

    /// Same as [`Tensor::requires_grad`], through a shared handle (freezing a layer).
    pub fn set_requires_grad(&self, on: bool) {
        if self.0.node.is_none() {
            self.0.requires_grad.store(on, Ordering::Relaxed);
            if !on {
                *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }

    /// Whether a gradient flows to this tensor.
    pub fn requires_grad_flag(&self) -> bool {
        self.0.node.is_some() || self.0.requires_grad.load(Ordering::Relaxed)
    }

    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    /// The gradient accumulated by `backward` (leaves only).
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the accumulated gradient (its buffer returns to the pool).
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn accumulate_grad(&self, g: Tensor) -> Result<()> {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(match slot.take() {
            Some(old) => old.add(&g)?,
            None => g,
        });
        Ok(())
    }

    /// The same values, cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.with_node(self.shape().to_vec(), None)
    }

    /// Reverse-mode differentiation from this scalar: accumulates `d self / d leaf` into every
    /// leaf that requires a gradient, releasing intermediate buffers as it goes. The graph is
    /// consumed: a second `backward` through it is an error.
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self)
    }

    /// The same data under a new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::Shape {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
                why: "element counts differ".into(),
            });
        }
        let from = self.shape().to_vec();
        let out = self.with_node(shape.to_vec(), None);
        Ok(autograd::record("reshape", out, &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&from)?)])
        }))
    }
}
