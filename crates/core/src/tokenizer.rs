//! HF `tokenizers` wrapper: truncation to a maximum length, empty/over-long text errors.
//! Padding and attention masks are built per batch by [`crate::batching`].

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{QzhouError, Result};

/// What to do with a text longer than the maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Keep the first `max_length` tokens (special tokens the tokenizer appends are kept), as
    /// sentence-transformers and transformers do.
    #[default]
    Truncate,
    /// Fail with [`QzhouError::TextTooLong`].
    Error,
}

/// A `tokenizer.json` tokenizer with a length limit.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    truncation: Truncation,
    pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("max_length", &self.max_length)
            .field("truncation", &self.truncation)
            .finish()
    }
}

impl TextTokenizer {
    /// Parse `tokenizer.json` bytes. `max_length` counts every token, special ones included.
    pub fn from_json(bytes: &[u8], max_length: usize, truncation: Truncation) -> Result<Self> {
        if max_length == 0 {
            return Err(QzhouError::InvalidOption(
                "max length must be at least 1".into(),
            ));
        }
        let mut inner =
            Tokenizer::from_bytes(bytes).map_err(|e| QzhouError::Tokenizer(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| QzhouError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        let pad_id = ["<|endoftext|>", "<pad>", "[PAD]"]
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .unwrap_or(0);
        Ok(Self {
            inner,
            max_length,
            truncation,
            pad_id,
        })
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Maximum tokens per text.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id used to fill padded positions (never attended to or pooled).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// What happens to texts longer than [`TextTokenizer::max_length`].
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// Token ids of each text (special tokens added as the tokenizer's post-processor says).
    /// Empty texts and, with [`Truncation::Error`], over-long texts are errors naming the text.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.encode_with(texts, self.truncation)
    }

    /// [`TextTokenizer::encode`] with an explicit over-length policy (a server decides per
    /// request).
    pub fn encode_with<S: AsRef<str>>(
        &self,
        texts: &[S],
        truncation: Truncation,
    ) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.as_ref();
                if text.trim().is_empty() {
                    return Err(QzhouError::EmptyText { index });
                }
                let enc = self
                    .inner
                    .encode(text, true)
                    .map_err(|e| QzhouError::Tokenizer(e.to_string()))?;
                if truncation == Truncation::Error && !enc.get_overflowing().is_empty() {
                    let tokens = self
                        .inner
                        .clone()
                        .with_truncation(None)
                        .map_err(|e| QzhouError::Tokenizer(e.to_string()))?
                        .encode(text, true)
                        .map_err(|e| QzhouError::Tokenizer(e.to_string()))?
                        .len();
                    return Err(QzhouError::TextTooLong {
                        index,
                        tokens,
                        max_length: self.max_length,
                    });
                }
                Ok(enc.get_ids().to_vec())
            })
            .collect()
    }

    /// The text of `ids` (for diagnostics).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| QzhouError::Tokenizer(e.to_string()))
    }
}
