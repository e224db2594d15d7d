//! Tokenisation through the `tokenizers` crate: a `tokenizer.json`, or a BERT WordPiece
//! vocabulary (`vocab.txt`); truncation and padding are always ours (a tokenizer.json's own
//! settings are replaced, and we say so once).

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

/// One tokenised batch: `batch` sequences padded to `seq` tokens (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
}

/// A tokenizer that truncates to `max_len` tokens (special tokens included) and pads a batch to
/// its longest member.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    max_len: usize,
}

fn error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid {
        op: "tokenizer",
        why: format!("{}: {why}", path.display()),
    }
}

impl Tokenizer {
    /// From a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| error(path, format!("not a tokenizer.json: {e}")))?;
        let file_settings = (
            inner.get_padding().is_some(),
            inner.get_truncation().map(|t| t.max_length),
        );
        if file_settings != (false, None) {
            eprintln!(
                "convirt: {} sets its own padding/truncation ({:?}); replaced by ours: truncate to {max_len}, pad to the longest in a batch",
                path.display(),
                file_settings
            );
        }
        Tokenizer::configured(inner, max_len).map_err(|e| error(path, e))
    }

    /// A BERT WordPiece tokenizer from `vocab.txt` (cased or uncased as `lowercase` says).
    pub fn from_vocab(path: &Path, lowercase: bool, max_len: usize) -> Result<Tokenizer> {
        let vocab = path
            .to_str()
            .ok_or_else(|| error(path, "path is not UTF-8"))?;
        let model = WordPiece::from_file(vocab)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| error(path, e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| error(path, format!("the vocabulary has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
        Tokenizer::configured(inner, max_len).map_err(|e| error(path, e))
    }

    fn configured(
        mut inner: tokenizers::Tokenizer,
        max_len: usize,
    ) -> std::result::Result<Tokenizer, String> {
        let pad_token = "[PAD]".to_string();
        let pad_id = inner.token_to_id(&pad_token).unwrap_or(0);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| e.to_string())?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Tokenizer { inner, max_len })
    }

    /// Trains a BERT WordPiece vocabulary of at most `vocab_size` entries on `corpus` (the
    /// embedded default has no pretrained tokenizer), with [PAD] [UNK] [CLS] [SEP] [MASK].
    pub fn train_wordpiece(
        corpus: &[String],
        vocab_size: usize,
        lowercase: bool,
        max_len: usize,
    ) -> Result<Tokenizer> {
        use tokenizers::models::wordpiece::WordPieceTrainer;
        use tokenizers::models::TrainerWrapper;
        use tokenizers::AddedToken;
        let fail = |e: &dyn std::fmt::Display| Error::Invalid {
            op: "tokenizer",
            why: format!("training WordPiece: {e}"),
        };
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                specials
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .build()
            .into();
        let model = WordPiece::builder()
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| fail(&e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer));
        inner
            .train(&mut trainer, corpus.iter())
            .map_err(|e| fail(&e))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| fail(&format!("no {t} token after training")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        Tokenizer::configured(inner, max_len).map_err(|e| fail(&e))
    }

    /// Writes the tokenizer as a `tokenizer.json` (with our truncation and padding).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| error(path, format!("cannot write it: {e}")))
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenises `texts` (with [CLS] and [SEP]) into one padded batch.
    pub fn encode(&self, texts: &[&str]) -> Result<TokenBatch> {
        let encodings =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| Error::Invalid {
                    op: "tokenizer",
                    why: format!("encoding failed: {e}"),
                })?;
        let seq = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let mut batch = TokenBatch {
            ids: Vec::new(),
            type_ids: Vec::new(),
            mask: Vec::new(),
            batch: texts.len(),
            seq,
        };
        for e in &encodings {
            batch.ids.extend_from_slice(e.get_ids());
            batch.type_ids.extend_from_slice(e.get_type_ids());
            batch
                .mask
                .extend(e.get_attention_mask().iter().map(|&m| m as f32));
        }
        Ok(batch)
    }
}
