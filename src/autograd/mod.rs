//! Reverse-mode autograd: every op that has an input requiring a gradient records a node
//! (its inputs and a backward closure holding what it saved); `backward()` walks the nodes in
//! reverse topological order, consuming each one so its saved buffers return to the pool.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Given the gradient of the output and which inputs need one, the inputs' gradients.
pub(crate) type BackwardFn =
    Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

pub(crate) struct Node {
    op: &'static str,
    /// Taken (and dropped) by backward; `None` afterwards.
    state: Mutex<Option<(Vec<Tensor>, BackwardFn)>>,
}

thread_local! {
    static NO_GRAD_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The seed of the backward running on this thread (a tensor of ones), kept alive until it
    /// ends so that no other tensor can be given its buffer meanwhile.
    static SEED: RefCell<Option<Tensor>> = const { RefCell::new(None) };
}

/// Whether `g` is the seed of the running backward, its buffer holding ones: a backward rule
/// whose only work is to scale by its incoming gradient may then skip it (InfoNCE's does).
/// Gradients are never written in place, so a tensor on the seed's buffer still holds ones.
pub(crate) fn is_unit_seed(g: &Tensor) -> bool {
    SEED.with(|s| {
        s.borrow()
            .as_ref()
            .is_some_and(|seed| seed.shares_storage(g))
    })
}

/// Whether ops record graph nodes on this thread.
pub fn grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Runs `f` without recording a graph (evaluation, optimiser updates).
///
/// ```no_run
/// # use convirt::{Gpu, Tensor, no_grad};
/// # let gpu = Gpu::shared()?;
/// let w = Tensor::param(&gpu, &[1.0, 2.0], &[2])?;
/// let y = no_grad(|| w.scale(3.0))?;
/// assert!(!y.requires_grad_flag());
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    let _guard = Guard;
    f()
}

/// Attaches a node to `out` when grad mode is on and some input needs a gradient; otherwise
/// drops `backward` (and what it saved) at once.
pub(crate) fn record(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    if !grad_enabled() || !inputs.iter().any(|t| t.requires_grad_flag()) {
        return out;
    }
    let node = Arc::new(Node {
        op,
        state: Mutex::new(Some((
            inputs.iter().map(|t| (*t).clone()).collect(),
            Box::new(backward),
        ))),
    });
    out.with_node(out.shape().to_vec(), Some(node))
}

fn node_key(n: &Arc<Node>) -> usize {
    Arc::as_ptr(n) as usize
}

/// Nodes reachable from `root`, each after all nodes that consume it (reverse topological).
fn topological(root: &Arc<Node>) -> Result<Vec<Arc<Node>>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, children pushed?)
    let mut stack = vec![(Arc::clone(root), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !seen.insert(node_key(&node)) {
            continue;
        }
        let children: Vec<Arc<Node>> = {
            let state = node.state.lock().unwrap_or_else(|e| e.into_inner());
            let (inputs, _) = state.as_ref().ok_or(Error::GraphFreed { op: node.op })?;
            inputs.iter().filter_map(|t| t.0.node.clone()).collect()
        };
        stack.push((node, true));
        for c in children {
            if !seen.contains(&node_key(&c)) {
                stack.push((c, false));
            }
        }
    }
    order.reverse();
    Ok(order)
}

pub(crate) fn backward(root: &Tensor) -> Result<()> {
    if root.numel() != 1 {
        return Err(Error::NotScalar {
            shape: root.shape().to_vec(),
        });
    }
    if !root.requires_grad_flag() {
        return Err(Error::Invalid {
            op: "backward",
            why: "the tensor does not depend on any parameter that requires a gradient".into(),
        });
    }
    // Uploaded rather than filled: a copy costs less than a dispatch on CPU adapters.
    let seed = Tensor::from_slice(root.gpu(), &[1.0], root.shape())?;
    struct ClearSeed;
    impl Drop for ClearSeed {
        fn drop(&mut self) {
            SEED.with(|s| s.borrow_mut().take());
        }
    }
    SEED.with(|s| *s.borrow_mut() = Some(seed.clone()));
    let _clear = ClearSeed;
    no_grad(|| {
        let Some(root_node) = root.0.node.clone() else {
            return root.accumulate_grad(seed);
        };
        let order = topological(&root_node)?;
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(node_key(&root_node), seed);
        for node in order {
            let state = node.state.lock().unwrap_or_else(|e| e.into_inner()).take();
            let (inputs, f) = state.ok_or(Error::GraphFreed { op: node.op })?;
            let Some(g) = grads.remove(&node_key(&node)) else {
                continue; // no gradient reached this node; its saved tensors are dropped
            };
            let needs: Vec<bool> = inputs.iter().map(|t| t.requires_grad_flag()).collect();
            let input_grads = f(&g, &needs)?;
            drop(g);
            for ((input, need), grad) in inputs.iter().zip(&needs).zip(input_grads) {
                let Some(grad) = grad.filter(|_| *need) else {
                    continue;
                };
                debug_assert_eq!(grad.shape(), input.shape(), "gradient shape of {}", node.op);
                match &input.0.node {
                    Some(n) => {
                        let key = node_key(n);
                        let acc = match grads.remove(&key) {
                            Some(old) => old.add(&grad)?,
                            None => grad,
                        };
                        grads.insert(key, acc);
                    }
                    None => input.accumulate_grad(grad)?,
                }
            }
        }
        Ok(())
    })
}
