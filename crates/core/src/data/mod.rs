//! QZhou's unified multi-task training data (paper §3): every source is cast into one of
//! three problem types, each with its own loss.
//!
//! | type | record | loss |
//! |---|---|---|
//! | retrieval | `{query, pos, negs[], instruction?}` | InfoNCE with hard, in-batch and query–query negatives |
//! | pair score (STS, NLI) | `{text1, text2, score}`, every pair in both directions | CoSENT |
//! | classification (and clustering) | `{query, pos, negs[], label, neg_labels[]}` | InfoNCE with same-label masking |
//!
//! The records serialise as JSON lines tagged by `"type"` ([`TrainingSample`]); [`jsonl`]
//! reads them (and any other JSONL source) streaming, reporting malformed lines by
//! `file:line`; [`convert`] turns the raw shapes of public datasets into them; [`sampler`]
//! draws single-dataset batches by weight, seeded and resumable.

pub mod convert;
pub mod jsonl;
pub mod rng;
pub mod sampler;

use serde::{Deserialize, Serialize};

/// A retrieval example: a query, its positive document and hard negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalSample {
    /// The query text (without instruction).
    pub query: String,
    /// The relevant document.
    pub pos: String,
    /// Hard negatives (may be empty: in-batch negatives still apply).
    #[serde(default)]
    pub negs: Vec<String>,
    /// The instruction put before the query, when the dataset has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
}

/// A scored text pair (STS similarity, NLI 2/1/0, binary paraphrase label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairSample {
    /// First text.
    pub text1: String,
    /// Second text.
    pub text2: String,
    /// Gold score: higher means more similar (only the order matters to CoSENT).
    pub score: f32,
}

/// A labelled text made contrastive: a same-label positive and other-label negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationSample {
    /// The text.
    pub query: String,
    /// Another text with the same label.
    pub pos: String,
    /// Texts with other labels.
    pub negs: Vec<String>,
    /// Label of `query` and `pos`.
    pub label: String,
    /// Label of each negative (the loss masks same-label pairs across the batch).
    pub neg_labels: Vec<String>,
}

/// One line of qzhou's training JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrainingSample {
    /// See [`RetrievalSample`].
    Retrieval(RetrievalSample),
    /// See [`PairSample`].
    Pair(PairSample),
    /// See [`ClassificationSample`].
    Classification(ClassificationSample),
}

impl TrainingSample {
    /// `retrieval`, `pair` or `classification`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Retrieval(_) => "retrieval",
            Self::Pair(_) => "pair",
            Self::Classification(_) => "classification",
        }
    }
}
