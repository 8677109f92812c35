//! `qzhou`: embed text with QZhou-Embedding or any Qwen2/Qwen3 embedding model, on CPU, wgpu
//! or CUDA. Every error ends the process with a non-zero status and a one-line reason.

mod backend;
mod data;
mod embed;
mod eval;
mod export;
mod export_web;
mod hub;
mod import_gguf;
mod input;
mod kernel_cache;
mod mine;
mod model_form;
mod output;
mod prompt_args;
mod serve;
mod shard;
mod synth;
mod train;

use clap::{Parser, Subcommand};

/// QZhou-Embedding toolchain.
#[derive(Parser)]
#[command(name = "qzhou", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts (arguments, a text file or JSONL) and write JSONL or .npy.
    Embed(embed::EmbedArgs),
    /// Join the outputs of `qzhou embed --shard I/N` (checks that every shard is there).
    MergeShards(shard::MergeShardsArgs),
    /// Write web weight packs (f32, f16, q8, q4) of a model folder for the npm package.
    ExportWeb(export_web::ExportWebArgs),
    /// Evaluate a model on MTEB-style task manifests (STS, pair classification, retrieval,
    /// reranking, classification, clustering) with an embedding cache; writes MTEB result files.
    Eval(eval::EvalArgs),
    /// Turn a llama.cpp GGUF of a Qwen2/Qwen3 model into a Hugging Face folder (config.json,
    /// dequantised safetensors, tokenizer.json).
    ImportGguf(import_gguf::ImportGgufArgs),
    /// Write a training checkpoint as a Hugging Face / sentence-transformers folder (LoRA merged).
    Export(export::ExportArgs),
    /// Train (contrastive, multi-task) from a run file: `qzhou train --config run.toml`.
    Train(train::TrainArgs),
    /// Synthesize training data with an OpenAI-compatible LLM server: paraphrase, augment,
    /// hardneg (durable, resumable; constraints checked in code).
    Synth(synth::SynthArgs),
    /// Serve embeddings over HTTP: OpenAI's /v1/embeddings and text-embeddings-inference's
    /// /embed, with dynamic batching, limits, an optional API key and Prometheus /metrics.
    Serve(serve::ServeArgs),
    /// Prepare training data: `data convert` (dataset files → training JSONL) and `data stats`.
    Data(data::DataArgs),
    /// Mine hard negatives with a qzhou model (top-k retrieval, rank window, positive-aware filter).
    Mine(mine::MineArgs),
}

fn main() {
    qzhou_core::host_memory::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::MergeShards(args) => shard::merge(args),
        Command::ExportWeb(args) => export_web::run(args),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::ImportGguf(args) => import_gguf::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Mine(args) => mine::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Data(args) => data::run(args),
    };
    if let Err(e) = result {
        // One line: the chain of causes joined, no backtrace.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("qzhou: error: {msg}");
        std::process::exit(1);
    }
}
