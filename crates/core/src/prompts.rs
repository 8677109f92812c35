//! QZhou's instruction prompts and the per-task instruction table of its evaluation code.
//!
//! Queries get `Instruct: {instruction}\nQuery: {text}` (the evaluation-code form, with a space
//! after `Query:`; the README/mteb form without the space is [`PromptStyle::NoSpace`]).
//! Documents get no prefix, except in tasks whose instruction applies to every input
//! (symmetric tasks such as STS, classification, clustering; see [`InstructionSide`]).

use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{QzhouError, Result};

/// QZhou's default instruction for web search.
pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

/// Spelling of the query template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptStyle {
    /// `Instruct: {i}\nQuery: {text}`: QZhou's evaluation code, which produced the paper's numbers.
    #[default]
    Space,
    /// `Instruct: {i}\nQuery:{text}`: QZhou's README, run_infer.py and mteb's loader.
    NoSpace,
}

impl std::str::FromStr for PromptStyle {
    type Err = QzhouError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "space" => Ok(Self::Space),
            "no-space" | "nospace" => Ok(Self::NoSpace),
            other => Err(QzhouError::InvalidOption(format!(
                "prompt style `{other}` (expected space or no-space)"
            ))),
        }
    }
}

/// The prefix put before a query: `Instruct: {instruction}\nQuery: ` (or without the space).
pub fn query_prefix(instruction: &str, style: PromptStyle) -> String {
    match style {
        PromptStyle::Space => format!("Instruct: {instruction}\nQuery: "),
        PromptStyle::NoSpace => format!("Instruct: {instruction}\nQuery:"),
    }
}

/// `query_prefix(instruction, style) + text`.
pub fn format_query(instruction: &str, text: &str, style: PromptStyle) -> String {
    query_prefix(instruction, style) + text
}

/// Which inputs of a task receive the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstructionSide {
    /// Only queries (asymmetric retrieval).
    Query,
    /// Every input: queries and documents alike (symmetric tasks and a few retrieval tasks).
    All,
}

/// MTEB task category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Classification.
    Classification,
    /// Clustering.
    Clustering,
    /// Pair classification.
    PairClassification,
    /// Reranking.
    Reranking,
    /// Retrieval.
    Retrieval,
    /// Semantic textual similarity.
    Sts,
    /// Summarization.
    Summarization,
}

/// One row of the instruction table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskInstruction {
    /// mteb task name, e.g. `FiQA2018`.
    pub task: String,
    /// `MTEB(eng, v2)` or `MTEB(cmn, v1)` (CMTEB).
    pub benchmark: String,
    /// Task category.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// The exact instruction string QZhou's evaluation used.
    pub instruction: String,
    /// Which inputs get it.
    pub apply_to: InstructionSide,
}

#[derive(Deserialize)]
struct InstructionTable {
    aliases: std::collections::BTreeMap<String, String>,
    tasks: Vec<TaskInstruction>,
}

fn table() -> &'static InstructionTable {
    static TABLE: OnceLock<InstructionTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../data/instructions.json"))
            .expect("data/instructions.json is checked by the unit tests")
    })
}

/// Every task of MTEB(eng, v2) (41) and CMTEB (31) with its QZhou instruction.
pub fn all_tasks() -> &'static [TaskInstruction] {
    &table().tasks
}

/// Look a task up by its mteb name (exact, then case-insensitive, then by alias).
pub fn task_instruction(name: &str) -> Result<&'static TaskInstruction> {
    let t = table();
    let name = t.aliases.get(name).map(String::as_str).unwrap_or(name);
    if let Some(found) = t.tasks.iter().find(|x| x.task == name) {
        return Ok(found);
    }
    if let Some(found) = t.tasks.iter().find(|x| x.task.eq_ignore_ascii_case(name)) {
        return Ok(found);
    }
    let suggestion = t
        .tasks
        .iter()
        .map(|x| {
            (
                strsim::levenshtein(&x.task.to_lowercase(), &name.to_lowercase()),
                &x.task,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 4)
        .map(|(_, n)| n.clone());
    Err(QzhouError::UnknownTask {
        name: name.to_string(),
        suggestion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_strings_are_exact() {
        assert_eq!(
            format_query(DEFAULT_INSTRUCTION, "what is the capital of France?", PromptStyle::Space),
            "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: what is the capital of France?"
        );
        assert_eq!(
            format_query("X", "y", PromptStyle::NoSpace),
            "Instruct: X\nQuery:y"
        );
    }

    #[test]
    fn table_covers_both_benchmarks() {
        let eng = all_tasks()
            .iter()
            .filter(|t| t.benchmark == "MTEB(eng, v2)")
            .count();
        let cmn = all_tasks()
            .iter()
            .filter(|t| t.benchmark == "MTEB(cmn, v1)")
            .count();
        assert_eq!((eng, cmn), (41, 31));
        let fiqa = task_instruction("FiQA2018").unwrap();
        assert_eq!(
            fiqa.instruction,
            "Given a financial question, retrieve user replies that best answer the question"
        );
        assert_eq!(fiqa.apply_to, InstructionSide::Query);
        let arguana = task_instruction("ArguAna").unwrap();
        assert_eq!(arguana.apply_to, InstructionSide::All);
        assert_eq!(
            task_instruction("Cmnli").unwrap().instruction,
            "Retrieve semantically similar text."
        );
        assert_eq!(
            task_instruction("STSB").unwrap().instruction,
            "Retrieve semantically similar text"
        );
        assert_eq!(
            task_instruction("MedrxivClusteringS2S").unwrap().task,
            "MedrxivClusteringS2S.v2"
        );
        assert_eq!(task_instruction("fiqa2018").unwrap().task, "FiQA2018");
        for t in all_tasks() {
            let side = t.apply_to;
            match t.task_type {
                TaskType::Retrieval if t.benchmark == "MTEB(cmn, v1)" => {
                    assert_eq!(side, InstructionSide::Query)
                }
                TaskType::Retrieval => {}
                _ => assert_eq!(side, InstructionSide::All, "{}", t.task),
            }
        }
    }

    #[test]
    fn unknown_task_suggests_the_closest() {
        let e = task_instruction("FiQA2019").unwrap_err().to_string();
        assert_eq!(e, "unknown task `FiQA2019` (did you mean `FiQA2018`?)");
        let e = task_instruction("completely different")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown task `completely different`");
    }
}
