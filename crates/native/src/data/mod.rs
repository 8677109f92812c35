//! `qzhou data`: turn public dataset files into qzhou's training JSONL (`convert`) and look
//! at a training file before choosing lengths and batch sizes (`stats`).

mod convert;
mod stats;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Convert dataset files (STS-B, SICK, MSRP, NLI, BEIR, triples, title–body, QA, reading
    /// comprehension, labelled texts) into training JSONL; `--help` lists each kind's columns.
    Convert(convert::ConvertArgs),
    /// Records per type and text lengths in tokens (percentiles) of a training JSONL.
    Stats(stats::StatsArgs),
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Convert(a) => convert::run(a),
        DataCommand::Stats(a) => stats::run(a),
    }
}
