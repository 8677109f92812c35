//! Retrieval scoring throughput: exact top-k by cosine of Q random queries over an N × D
//! random corpus held as device blocks (`qzhou_core::metrics::{TopK, add_block}`, Burn's Flex
//! CPU backend). Prints queries/s; `benches/search.sh` runs it beside PyTorch.
//!
//!     cargo run --release -p qzhou-cli --example bench_search -- N D Q K BLOCK

use std::time::Instant;

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use qzhou_core::metrics::{add_block, TopK};

fn main() {
    // As the qzhou CLI does at start-up.
    qzhou_core::host_memory::keep_freed_memory();
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("a number"))
        .collect();
    let [n, d, q, k, block] = a[..] else {
        eprintln!("usage: bench_search N D Q K BLOCK");
        std::process::exit(2);
    };
    let dev = Default::default();
    let corpus: Vec<Tensor<Flex, 2>> = (0..n)
        .step_by(block)
        .map(|s| Tensor::random([block.min(n - s), d], Distribution::Normal(0.0, 1.0), &dev))
        .collect();
    let queries = Tensor::<Flex, 2>::random([q, d], Distribution::Normal(0.0, 1.0), &dev);
    let start = Instant::now();
    let mut top = TopK::new(q, k);
    for (i, b) in corpus.iter().enumerate() {
        add_block(&mut top, queries.clone(), b.clone(), i * block).expect("scoring");
    }
    let hits = top.into_results();
    let s = start.elapsed().as_secs_f64();
    assert_eq!(hits[0].len(), k);
    println!(
        "| qzhou (Flex CPU, blocks of {block}) | {n} × {d} | {q} | {k} | {s:.2} | {:.1} |",
        q as f64 / s
    );
}
