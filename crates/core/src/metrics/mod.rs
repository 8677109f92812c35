//! Evaluation metrics over embeddings and rankings, matching the reference implementations
//! MTEB reports with: `trec_eval` (through pytrec_eval) for retrieval, scipy for correlations.
//! Pure functions on host numbers; parity fixtures in `tests/metrics.rs`
//! (`scripts/make_metric_fixtures.py`).

pub mod classification;
pub mod clustering;
pub mod logistic;
pub mod pair_classification;
pub mod paired;
pub mod retrieval;
pub mod search;
pub mod sts;
pub mod summarization;

pub use classification::{classification_scores, ClassificationScores};
pub use clustering::{clustering_experiments, kmeans, minibatch_kmeans, v_measure};
pub use logistic::{classification_draws, classification_experiments, LogisticRegression};
pub use pair_classification::{
    pair_classification_scores, threshold_metrics, PairClassificationScores, ThresholdMetrics,
};
pub use paired::{cosine, paired_similarities, PairedSimilarities};
pub use retrieval::{evaluate_retrieval, Qrels, QueryScores, RetrievalScores, Run};
pub use search::{add_block, TopK};
pub use sts::{pearson, spearman, sts_scores, StsScores};
pub use summarization::{summarization_scores, SummarizationScores, SummarizationText};
