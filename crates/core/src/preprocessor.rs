//! Texts to token ids: the prompt put before each text (QZhou's instructions or a model
//! folder's named sentence-transformers prompts) and the tokenizer.
//!
//! [`crate::Embedder`] owns one; a server clones it to tokenise requests on its own threads
//! while the model runs elsewhere (it is `Send + Sync` and holds no tensors).

use std::collections::BTreeMap;

use crate::embedder::{EmbedOptions, TextKind};
use crate::error::{QzhouError, Result};
use crate::prompts::{query_prefix, task_instruction, InstructionSide, DEFAULT_INSTRUCTION};
use crate::tokenizer::{TextTokenizer, Truncation};

/// Prompts plus tokenizer of one model.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    tokenizer: TextTokenizer,
    /// Named prompts from `config_sentence_transformers.json`: full prefixes, already formatted.
    prompts: BTreeMap<String, String>,
}

impl Preprocessor {
    /// A tokenizer and a folder's named prompts (empty when it has none).
    pub fn new(tokenizer: TextTokenizer, prompts: BTreeMap<String, String>) -> Self {
        Self { tokenizer, prompts }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Names of the model folder's sentence-transformers prompts.
    pub fn prompt_names(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }

    /// The exact string put before each text for these options.
    ///
    /// A `prompt_name` wins: the folder's prompt of that name, else `query` / `document` /
    /// `passage` as the kind of the same name. Otherwise an explicit instruction applies to
    /// queries; a task's QZhou instruction applies to queries, and to documents too where the
    /// task says so; a query with neither gets the folder's `query` prompt, else QZhou's default
    /// instruction; a document gets the folder's `document` (or `passage`) prompt, else nothing.
    pub fn prefix(&self, options: &EmbedOptions) -> Result<String> {
        if let Some(name) = &options.prompt_name {
            if let Some(p) = self.prompts.get(name) {
                return Ok(p.clone());
            }
            let kind = match name.as_str() {
                "query" => TextKind::Query,
                "document" | "passage" => TextKind::Document,
                _ => {
                    return Err(QzhouError::UnknownPrompt {
                        name: name.clone(),
                        available: self.prompt_names().map(str::to_string).collect(),
                    })
                }
            };
            let options = EmbedOptions {
                kind,
                prompt_name: None,
                ..options.clone()
            };
            return self.prefix(&options);
        }
        let (instruction, side) = match (&options.instruction, &options.task) {
            (Some(i), _) => (Some(i.clone()), InstructionSide::Query),
            (None, Some(task)) => {
                let t = task_instruction(task)?;
                (Some(t.instruction.clone()), t.apply_to)
            }
            (None, None) => (None, InstructionSide::Query),
        };
        let prompts = &self.prompts;
        Ok(match (options.kind, instruction) {
            (TextKind::Query, Some(i)) => query_prefix(&i, options.prompt_style),
            (TextKind::Document, Some(i)) if side == InstructionSide::All => {
                query_prefix(&i, options.prompt_style)
            }
            (TextKind::Document, Some(_)) => String::new(),
            (TextKind::Query, None) => match prompts.get("query") {
                Some(p) => p.clone(),
                None => query_prefix(DEFAULT_INSTRUCTION, options.prompt_style),
            },
            (TextKind::Document, None) => prompts
                .get("document")
                .or_else(|| prompts.get("passage"))
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Token ids of `texts` after prefixing, truncated (or refused) as the tokenizer was built
    /// to; empty texts are errors naming their position.
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<u32>>> {
        self.tokenize_with(texts, options, self.tokenizer.truncation())
    }

    /// [`Preprocessor::tokenize`] with an explicit over-length policy.
    pub fn tokenize_with<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        truncation: Truncation,
    ) -> Result<Vec<Vec<u32>>> {
        if let Some(index) = texts.iter().position(|t| t.as_ref().trim().is_empty()) {
            return Err(QzhouError::EmptyText { index });
        }
        let prefix = self.prefix(options)?;
        let full: Vec<String> = texts
            .iter()
            .map(|t| format!("{prefix}{}", t.as_ref()))
            .collect();
        self.tokenizer.encode_with(&full, truncation)
    }
}
