//! Named weights: reading and writing safetensors files, and the source layers draw their
//! parameters from (a file, or a seeded initialiser). Layers know their own tensor names; this
//! file knows only the format.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a parameter is initialised when no file provides it.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Uniform in +-sqrt(1 / fan_in) * gain, fan_in = product of the shape but its first axis
    /// (torch's default for Linear and Conv2d weights is gain 1, i.e. kaiming_uniform(a = sqrt 5)).
    UniformFanIn {
        gain: f32,
    },
    /// Uniform in +-bound.
    Uniform(f32),
    Constant(f32),
}

/// Tensors read from a safetensors file, as f32 on the host; integer tensors (token ids,
/// `position_ids`, `num_batches_tracked`) apart, as i64.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub integers: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    pub metadata: HashMap<String, String>,
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid {
        op: "safetensors",
        why: format!("{}: {why}", path.display()),
    }
}

impl StateDict {
    /// Reads every floating-point tensor of a safetensors file (F32, F16, BF16, F64) as f32,
    /// and every integer tensor (I64, I32, U32, U8) as i64.
    pub fn read(path: &Path) -> Result<StateDict> {
        let bytes =
            std::fs::read(path).map_err(|e| file_error(path, format!("cannot read it: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| file_error(path, format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| file_error(path, e))?;
        let mut out = StateDict {
            metadata: header.metadata().clone().unwrap_or_default(),
            ..Default::default()
        };
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytemuck::pod_collect_to_vec(data),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
                int => {
                    let ints: Vec<i64> = match int {
                        Dtype::I64 => data
                            .chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                            .collect(),
                        Dtype::I32 => data
                            .chunks_exact(4)
                            .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64)
                            .collect(),
                        Dtype::U32 => data
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64)
                            .collect(),
                        Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
                        _ => continue,
                    };
                    out.integers.insert(name, (view.shape().to_vec(), ints));
                    continue;
                }
            };
            out.tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(out)
    }

    /// Writes `tensors` (downloaded from the device) with `metadata`, atomically: a temporary
    /// file in the same folder, then a rename, so a crash never leaves a half-written file.
    pub fn write(
        path: &Path,
        tensors: &[(String, Tensor)],
        metadata: HashMap<String, String>,
    ) -> Result<()> {
        let mut host = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            host.push((name.clone(), t.shape().to_vec(), t.to_vec()?));
        }
        let views = host
            .iter()
            .map(|(name, shape, data)| {
                safetensors::tensor::TensorView::new(
                    Dtype::F32,
                    shape.clone(),
                    bytemuck::cast_slice(data),
                )
                .map(|v| (name.clone(), v))
                .map_err(|e| file_error(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes =
            safetensors::serialize(views, Some(metadata)).map_err(|e| file_error(path, e))?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes)
            .map_err(|e| file_error(&tmp, format!("cannot write it: {e}")))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| file_error(path, format!("cannot rename {}: {e}", tmp.display())))
    }
}

/// Where layers get their parameters: a state dict (checked name by name and shape by shape)
/// or, for names it lacks and is allowed to lack, a seeded initialiser.
pub struct WeightSource {
    gpu: Arc<Gpu>,
    file: Option<(PathBuf, StateDict)>,
    used: HashSet<String>,
    rng: u64,
    /// Names that may be missing or differently shaped in the file (re-initialised instead).
    replaceable: Vec<String>,
    /// Prefixes a file may put before every name (`bert.` in BertForMaskedLM checkpoints).
    prefixes: Vec<String>,
    /// Prefixes of tensors a file may hold that the model does not use (`cls.` heads).
    ignored: Vec<String>,
    /// Names are looked up under this scope (`image.` while a composite builds its ResNet).
    scope: String,
}

impl WeightSource {
    /// Every parameter from the initialiser, deterministic in `seed`.
    pub fn random(gpu: &Arc<Gpu>, seed: u64) -> WeightSource {
        WeightSource {
            gpu: Arc::clone(gpu),
            file: None,
            used: HashSet::new(),
            rng: seed,
            replaceable: Vec::new(),
            prefixes: Vec::new(),
            ignored: Vec::new(),
            scope: String::new(),
        }
    }

    /// Every parameter from the file at `path`.
    pub fn from_file(gpu: &Arc<Gpu>, path: &Path) -> Result<WeightSource> {
        let dict = StateDict::read(path)?;
        Ok(WeightSource {
            file: Some((path.to_path_buf(), dict)),
            ..WeightSource::random(gpu, 0)
        })
    }

    /// Lets tensors whose names start with `prefix` be missing or differently shaped in the
    /// file: they are initialised instead (a classification head replaced by a new one).
    pub fn allow_replacing(mut self, prefix: &str) -> WeightSource {
        self.replaceable.push(prefix.to_string());
        self
    }

    /// Accepts files whose names all carry `prefix` (e.g. `bert.`).
    pub fn accept_prefix(mut self, prefix: &str) -> WeightSource {
        self.prefixes.push(prefix.to_string());
        self
    }

    /// Tolerates tensors under `prefix` that the model does not use (e.g. `cls.`).
    pub fn ignore(mut self, prefix: &str) -> WeightSource {
        self.ignored.push(prefix.to_string());
        self
    }

    /// Runs `build` with every name it asks for prefixed by `scope.` (a model inside a model).
    pub fn scoped<R>(&mut self, scope: &str, build: impl FnOnce(&mut WeightSource) -> R) -> R {
        let inner = format!("{}{scope}.", self.scope);
        let outer = std::mem::replace(&mut self.scope, inner);
        let result = build(self);
        self.scope = outer;
        result
    }

    /// Like [`WeightSource::allow_replacing`], on a borrowed source.
    pub fn allow_replacing_mut(&mut self, prefix: &str) {
        self.replaceable.push(format!("{}{prefix}", self.scope));
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The tensor `name` of `shape`: from the file when there is one, else from `init`.
    pub fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let scoped = format!("{}{name}", self.scope);
        let name = scoped.as_str();
        let replaceable = self
            .replaceable
            .iter()
            .any(|p| name.starts_with(p.as_str()));
        if let Some((path, dict)) = &self.file {
            let key = std::iter::once(name.to_string())
                .chain(self.prefixes.iter().map(|p| format!("{p}{name}")))
                .find(|k| dict.tensors.contains_key(k))
                .unwrap_or_else(|| name.to_string());
            match dict.tensors.get(&key) {
                Some((file_shape, data)) if file_shape == shape => {
                    self.used.insert(key);
                    return Tensor::from_slice(&self.gpu, data, shape);
                }
                Some((file_shape, _)) if !replaceable => {
                    return Err(Error::Shape {
                        op: "loading weights",
                        lhs: shape.to_vec(),
                        rhs: file_shape.clone(),
                        why: format!(
                            "tensor '{name}' in {} has another shape than the model expects",
                            path.display()
                        ),
                    })
                }
                None if !replaceable => {
                    return Err(Error::Invalid {
                        op: "loading weights",
                        why: format!(
                            "tensor '{name}' (shape {shape:?}) is missing from {}",
                            path.display()
                        ),
                    })
                }
                _ => {
                    self.used.insert(key);
                }
            }
        }
        let data = self.initial_values(shape, init);
        Tensor::from_slice(&self.gpu, &data, shape)
    }

    fn initial_values(&mut self, shape: &[usize], init: Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let bound = match init {
            Init::Constant(v) => return vec![v; n],
            Init::Uniform(b) => b,
            Init::UniformFanIn { gain } => {
                gain / (shape.iter().skip(1).product::<usize>().max(1) as f32).sqrt()
            }
        };
        (0..n)
            .map(|_| {
                // splitmix64: deterministic, and independent of the order other layers draw in
                // only through the seed, which is what reproducible runs need.
                self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.rng;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * bound
            })
            .collect()
    }

    /// Ends loading: a tensor in the file that no layer asked for is an error naming it (the
    /// file is for another architecture), except where replacing was allowed.
    pub fn finish(self) -> Result<()> {
        let Some((path, dict)) = &self.file else {
            return Ok(());
        };
        let unexpected: Vec<&String> = dict
            .tensors
            .keys()
            .filter(|k| {
                let under =
                    |prefixes: &[String]| prefixes.iter().any(|p| k.starts_with(p.as_str()));
                // A replaceable tensor may also sit behind an accepted prefix (`bert.pooler.`).
                let behind_prefix = self.prefixes.iter().any(|p| {
                    k.strip_prefix(p.as_str()).is_some_and(|rest| {
                        self.replaceable
                            .iter()
                            .any(|r| rest.starts_with(r.as_str()))
                    })
                });
                !self.used.contains(*k)
                    && !under(&self.replaceable)
                    && !under(&self.ignored)
                    && !behind_prefix
            })
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unexpected.iter().take(5).map(|s| s.as_str()).collect();
        Err(Error::Invalid {
            op: "loading weights",
            why: format!(
                "{} has {} tensor(s) the model does not use, e.g. {}: is it for another architecture?",
                path.display(),
                unexpected.len(),
                shown.join(", ")
            ),
        })
    }
}
