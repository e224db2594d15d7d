//! BERT in Hugging Face's layout and tensor names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, ..., `pooler.dense.weight`), configured from a
//! `config.json`, so BERT-family checkpoints (ClinicalBERT, MiniLM) load from safetensors
//! unchanged; a `bert.` prefix (BertForMaskedLM checkpoints) is accepted and their `cls.` heads
//! ignored.

pub use crate::data::text::TokenBatch;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{join, Embedding, LayerNorm, Linear, Named, WeightSource};
use crate::ops::attention::attention_tokens;
use crate::ops::embedding::embedding;
use crate::ops::Activation;
use crate::tensor::Tensor;
use std::path::Path;
use std::sync::Arc;

/// The fields of a Hugging Face BERT `config.json` that shape the network.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_dropout_prob: f32,
    pub attention_probs_dropout_prob: f32,
}

impl BertConfig {
    /// BERT-base (ClinicalBERT's shape, cased vocabulary of 28996).
    pub fn base(vocab_size: usize) -> BertConfig {
        BertConfig {
            vocab_size,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
        }
    }

    /// Reads `config.json`; a missing field or a non-GELU activation is an error naming it.
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let err = |why: String| Error::Invalid {
            op: "BertConfig",
            why: format!("{}: {why}", path.display()),
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let int = |k: &str| -> Result<usize> {
            json.get(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| err(format!("no integer field '{k}'")))
        };
        let float =
            |k: &str, default: f64| json.get(k).and_then(|v| v.as_f64()).unwrap_or(default) as f32;
        if let Some(act) = json.get("hidden_act").and_then(|v| v.as_str()) {
            if act != "gelu" {
                return Err(err(format!(
                    "hidden_act '{act}' is not supported (only the erf GELU, \"gelu\")"
                )));
            }
        }
        Ok(BertConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            intermediate_size: int("intermediate_size")?,
            max_position_embeddings: int("max_position_embeddings")?,
            type_vocab_size: int("type_vocab_size").unwrap_or(2),
            layer_norm_eps: float("layer_norm_eps", 1e-12),
            hidden_dropout_prob: float("hidden_dropout_prob", 0.1),
            attention_probs_dropout_prob: float("attention_probs_dropout_prob", 0.1),
        })
    }
}

#[derive(Debug, Clone)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl BertLayer {
    fn new(src: &mut WeightSource, prefix: &str, c: &BertConfig) -> Result<BertLayer> {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        let p = |s: &str| join(prefix, s);
        Ok(BertLayer {
            query: Linear::new(src, &p("attention.self.query"), d, d, true)?,
            key: Linear::new(src, &p("attention.self.key"), d, d, true)?,
            value: Linear::new(src, &p("attention.self.value"), d, d, true)?,
            attention_output: Linear::new(src, &p("attention.output.dense"), d, d, true)?,
            attention_norm: LayerNorm::new(
                src,
                &p("attention.output.LayerNorm"),
                d,
                c.layer_norm_eps,
            )?,
            intermediate: Linear::new(src, &p("intermediate.dense"), d, i, true)?,
            output: Linear::new(src, &p("output.dense"), i, d, true)?,
            output_norm: LayerNorm::new(src, &p("output.LayerNorm"), d, c.layer_norm_eps)?,
        })
    }

    fn named(&self, out: &mut Named) {
        for l in [&self.query, &self.key, &self.value, &self.attention_output] {
            l.named(out);
        }
        self.attention_norm.named(out);
        self.intermediate.named(out);
        self.output.named(out);
        self.output_norm.named(out);
    }
}

/// Whether dropout is active, and its seed for this forward pass.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Eval,
    Train { seed: u64 },
}

/// The BERT encoder (and its optional pooler).
#[derive(Debug, Clone)]
pub struct BertModel {
    pub config: BertConfig,
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    pooler: Option<Linear>,
}

impl BertModel {
    /// Builds the model from `src` (a file or an initialiser); `pooler` adds `pooler.dense`.
    pub fn new(src: &mut WeightSource, config: &BertConfig, pooler: bool) -> Result<BertModel> {
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Invalid {
                op: "BertModel",
                why: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            });
        }
        let c = config;
        let d = c.hidden_size;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            layers.push(BertLayer::new(src, &format!("encoder.layer.{i}"), c)?);
        }
        Ok(BertModel {
            config: c.clone(),
            word_embeddings: Embedding::new(src, "embeddings.word_embeddings", c.vocab_size, d)?,
            position_embeddings: Embedding::new(
                src,
                "embeddings.position_embeddings",
                c.max_position_embeddings,
                d,
            )?,
            token_type_embeddings: Embedding::new(
                src,
                "embeddings.token_type_embeddings",
                c.type_vocab_size,
                d,
            )?,
            embeddings_norm: LayerNorm::new(src, "embeddings.LayerNorm", d, c.layer_norm_eps)?,
            layers,
            pooler: if pooler {
                Some(Linear::new(src, "pooler.dense", d, d, true)?)
            } else {
                None
            },
        })
    }

    /// Freshly initialised, deterministic in `seed`.
    pub fn random(
        gpu: &Arc<Gpu>,
        config: &BertConfig,
        pooler: bool,
        seed: u64,
    ) -> Result<BertModel> {
        BertModel::new(&mut WeightSource::random(gpu, seed), config, pooler)
    }

    /// Loads Hugging Face BERT weights from safetensors (`bert.` prefix accepted, `cls.` heads
    /// ignored); any other missing, unexpected or misshaped tensor is an error naming it.
    pub fn load(
        gpu: &Arc<Gpu>,
        path: &Path,
        config: &BertConfig,
        pooler: bool,
    ) -> Result<BertModel> {
        let mut src = WeightSource::from_file(gpu, path)?
            .accept_prefix("bert.")
            .ignore("cls.");
        if !pooler {
            src = src.ignore("pooler.").ignore("bert.pooler.");
        }
        let model = BertModel::new(&mut src, config, pooler)?;
        src.finish()?;
        Ok(model)
    }

    /// Freezes the embeddings and the first `layers` transformer layers: no gradient is
    /// computed or stored for them, and backward stops above them.
    pub fn freeze(&self, layers: usize) {
        let mut frozen = Vec::new();
        for e in [
            &self.word_embeddings,
            &self.position_embeddings,
            &self.token_type_embeddings,
        ] {
            e.named(&mut frozen);
        }
        self.embeddings_norm.named(&mut frozen);
        for layer in self.layers.iter().take(layers) {
            layer.named(&mut frozen);
        }
        for (_, t) in frozen {
            t.set_requires_grad(false);
        }
    }

    /// The embedding layer's output [B, T, D].
    pub fn embed(&self, tokens: &TokenBatch, mode: Mode) -> Result<Tensor> {
        let (b, t) = (tokens.batch, tokens.seq);
        if t > self.config.max_position_embeddings {
            return Err(Error::Invalid {
                op: "BertModel",
                why: format!(
                    "{t} tokens exceed max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            });
        }
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
        let words = self.word_embeddings.forward(&tokens.ids, &[b, t])?;
        let pos = self.position_embeddings.forward(&positions, &[b, t])?;
        let types = self
            .token_type_embeddings
            .forward(&tokens.type_ids, &[b, t])?;
        let x = self
            .embeddings_norm
            .forward(&words.add(&pos)?.add(&types)?)?;
        self.dropout(&x, mode, 0)
    }

    fn dropout(&self, x: &Tensor, mode: Mode, salt: u64) -> Result<Tensor> {
        match mode {
            Mode::Train { seed } if self.config.hidden_dropout_prob > 0.0 => x.dropout(
                self.config.hidden_dropout_prob,
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt,
            ),
            _ => Ok(x.clone()),
        }
    }

    /// Hidden states after every layer: `[embeddings, layer 1, ..., layer L]`, each [B, T, D].
    pub fn hidden_states(&self, tokens: &TokenBatch, mode: Mode) -> Result<Vec<Tensor>> {
        let gpu = self.word_embeddings.weight.gpu();
        let (b, t, d) = (tokens.batch, tokens.seq, self.config.hidden_size);
        let heads = self.config.num_attention_heads;
        let dh = d / heads;
        let mask = Tensor::from_slice(gpu, &tokens.mask, &[b, t])?;
        let mut states = vec![self.embed(tokens, mode)?];
        for (i, layer) in self.layers.iter().enumerate() {
            let x = states.last().expect("embeddings first");
            let q = layer.query.forward(x)?;
            let k = layer.key.forward(x)?;
            let v = layer.value.forward(x)?;
            let scale = 1.0 / (dh as f32).sqrt();
            let ctx = attention_tokens(&q, &k, &v, heads, Some(&mask), scale)?;
            let salt = 2 * i as u64 + 1;
            let attended = self.dropout(&layer.attention_output.forward(&ctx)?, mode, salt)?;
            let h = layer.attention_norm.forward(&attended.add(x)?)?;
            let inner = layer.intermediate.forward_with(&h, Activation::Gelu)?;
            let out = self.dropout(&layer.output.forward(&inner)?, mode, salt + 1)?;
            states.push(layer.output_norm.forward(&out.add(&h)?)?);
        }
        Ok(states)
    }

    /// The last hidden state [B, T, D].
    pub fn forward(&self, tokens: &TokenBatch, mode: Mode) -> Result<Tensor> {
        Ok(self
            .hidden_states(tokens, mode)?
            .pop()
            .expect("at least the embeddings"))
    }

    /// BERT's pooler: tanh(dense(first token)), [B, D].
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let pooler = self.pooler.as_ref().ok_or(Error::Invalid {
            op: "BertModel::pool",
            why: "this model was built without a pooler (pooler.dense)".into(),
        })?;
        let (b, t, d) = (hidden.shape()[0], hidden.shape()[1], hidden.shape()[2]);
        // The first token of each sequence, gathered as rows of the flattened states.
        let first: Vec<u32> = (0..b as u32).map(|i| i * t as u32).collect();
        let cls = embedding(&hidden.reshape(&[b * t, d])?, &first, &[b])?;
        pooler.forward(&cls)?.tanh()
    }

    /// Every tensor in Hugging Face's order.
    pub fn named(&self) -> Named {
        let mut out = Vec::new();
        self.word_embeddings.named(&mut out);
        self.position_embeddings.named(&mut out);
        self.token_type_embeddings.named(&mut out);
        self.embeddings_norm.named(&mut out);
        for layer in &self.layers {
            layer.named(&mut out);
        }
        if let Some(p) = &self.pooler {
            p.named(&mut out);
        }
        out
    }

    /// The trainable parameters (frozen ones excluded).
    pub fn parameters(&self) -> Named {
        self.named()
            .into_iter()
            .filter(|(_, t)| t.requires_grad_flag())
            .collect()
    }
}
