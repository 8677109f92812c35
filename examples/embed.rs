//! The three-line library API: load a model folder, embed queries and documents, compare.
//!
//! `cargo run -p qzhou-cli --example embed -- [MODEL_DIR]` (default: the tiny test fixture).

use burn::backend::Flex;
use qzhou_core::{EmbedOptions, Embedder, LoadOptions};

fn main() -> Result<(), qzhou_core::QzhouError> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/tiny-qwen2".into());
    let embedder = Embedder::<Flex>::from_dir(&dir, &Default::default(), &LoadOptions::default())?;
    let queries = embedder.embed(&["what is the capital of France?"], &EmbedOptions::query())?;
    let docs = embedder.embed(
        &[
            "Paris is the capital and most populous city of France.",
            "Berlin is the capital of Germany.",
        ],
        &EmbedOptions::document(),
    )?;
    for (doc, v) in ["Paris…", "Berlin…"].iter().zip(&docs) {
        let score: f32 = queries[0].iter().zip(v).map(|(a, b)| a * b).sum();
        println!("{doc}: cosine {score:.4}");
    }
    Ok(())
}
