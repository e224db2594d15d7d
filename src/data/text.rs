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

    /// Builds a BERT WordPiece vocabulary of at most `vocab_size` entries from `corpus` (the
    /// embedded default has no pretrained tokenizer): [PAD] [UNK] [CLS] [SEP] [MASK], every
    /// character of the corpus alone and as a `##` continuation (so no seen word is ever
    /// unknown), then whole words seen at least twice, most frequent first.
    ///
    /// Words are split by the `tokenizers` BERT normaliser and pre-tokeniser, and encoding is
    /// its WordPiece model (greedy longest match). The vocabulary is not learnt by its
    /// `WordPieceTrainer`: that trainer breaks ties between merges in hash-map order, so the
    /// same corpus gave different vocabularies (and different runs from one seed) each time.
    pub fn train_wordpiece(
        corpus: &[String],
        vocab_size: usize,
        lowercase: bool,
        max_len: usize,
    ) -> Result<Tokenizer> {
        use std::collections::{BTreeMap, BTreeSet};
        use tokenizers::{
            NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
            PreTokenizer,
        };
        let fail = |e: &dyn std::fmt::Display| Error::Invalid {
            op: "tokenizer",
            why: format!("building a WordPiece vocabulary: {e}"),
        };
        let normalizer = BertNormalizer::new(true, true, None, lowercase);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for sentence in corpus {
            let mut normalized = NormalizedString::from(sentence.as_str());
            normalizer
                .normalize(&mut normalized)
                .map_err(|e| fail(&e))?;
            let mut words = PreTokenizedString::from(normalized);
            BertPreTokenizer
                .pre_tokenize(&mut words)
                .map_err(|e| fail(&e))?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *counts.entry(word.to_string()).or_default() += 1;
            }
        }
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let chars: BTreeSet<char> = counts.keys().flat_map(|w| w.chars()).collect();
        let mut tokens: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        tokens.extend(chars.iter().map(|c| c.to_string()));
        tokens.extend(chars.iter().map(|c| format!("##{c}")));
        let mut words: Vec<(&String, &usize)> = counts
            .iter()
            .filter(|(w, &n)| n >= 2 && w.chars().count() > 1)
            .collect();
        words.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let room = vocab_size.saturating_sub(tokens.len());
        tokens.extend(words.into_iter().take(room).map(|(w, _)| w.clone()));
        let vocab = tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32));
        let model = WordPiece::builder()
            .vocab(vocab.collect::<tokenizers::models::bpe::Vocab>())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| fail(&e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(BertPreTokenizer));
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

    /// Writes the tokenizer as a `tokenizer.json` (vocabulary, normaliser, pre-tokeniser and
    /// post-processor; the maximum length travels in the run's config).
    pub fn save(&self, path: &Path) -> Result<()> {
        // Without our truncation and padding: they are applied again on loading, and a file
        // that carried them would be reported as overriding ours.
        let mut plain = self.inner.clone();
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| error(path, format!("cannot write it: {e}")))?;
        plain
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_vocabulary_is_the_same_every_time_and_covers_the_corpus() {
        let corpus: Vec<String> = (0..60)
            .flat_map(|i| {
                crate::data::report::sections(&crate::data::synthetic::generate(i, 8, 0).report)
            })
            .collect();
        let a = Tokenizer::train_wordpiece(&corpus, 300, true, 32).unwrap();
        let ids = |t: &Tokenizer| {
            t.encode(&["Small left pleural effusion.", "No pneumothorax."])
                .unwrap()
                .ids
        };
        let b = Tokenizer::train_wordpiece(&corpus, 300, true, 32).unwrap();
        assert_eq!(a.inner.get_vocab(false), b.inner.get_vocab(false));
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.inner.token_to_id("[PAD]"), Some(0));
        assert!(a.vocab_size() <= 300);
        // Every sentence of the corpus encodes without [UNK].
        let unk = a.inner.token_to_id("[UNK]");
        let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
        assert!(!a
            .encode(&texts)
            .unwrap()
            .ids
            .iter()
            .any(|&i| Some(i) == unk));
    }
}
