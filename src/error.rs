//! One error type for the whole engine: every message names the thing that went wrong.

use std::fmt;

/// Everything the engine can refuse or fail at.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No adapter could be found, or none matched the requested backend / name.
    NoAdapter(String),
    /// The adapter was found but the device could not be created, or the device failed.
    Device(String),
    /// Operands of `op` have incompatible shapes.
    Shape {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        why: String,
    },
    /// A tensor needs a buffer larger than the adapter can bind.
    TooLarge {
        op: &'static str,
        shape: Vec<usize>,
        bytes: u64,
        limit: u64,
    },
    /// `backward()` reached a graph whose saved tensors were already released.
    GraphFreed { op: &'static str },
    /// `backward()` was called on a tensor that is not a scalar.
    NotScalar { shape: Vec<usize> },
    /// A request that makes no sense (bad axis, bad permutation, wrong dtype...).
    Invalid { op: &'static str, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(why) => write!(f, "no GPU adapter: {why}"),
            Error::Device(why) => write!(f, "GPU device error: {why}"),
            Error::Shape { op, lhs, rhs, why } => {
                write!(f, "{op}: shape mismatch between {lhs:?} and {rhs:?}: {why}")
            }
            Error::TooLarge {
                op,
                shape,
                bytes,
                limit,
            } => write!(
                f,
                "{op}: tensor of shape {shape:?} needs {bytes} bytes, more than the adapter's \
                 largest storage binding ({limit} bytes)"
            ),
            Error::GraphFreed { op } => write!(
                f,
                "backward through '{op}' whose graph was already freed by an earlier backward(); \
                 run the forward pass again before calling backward() a second time"
            ),
            Error::NotScalar { shape } => write!(
                f,
                "backward() needs a scalar (one element) to start from, got shape {shape:?}"
            ),
            Error::Invalid { op, why } => write!(f, "{op}: {why}"),
        }
    }
}

impl std::error::Error for Error {}
