//! Reading the sentence-transformers files of a model folder: `modules.json`,
//! `1_Pooling/config.json`, `config_sentence_transformers.json`, `sentence_bert_config.json`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{QzhouError, Result};
use crate::pooling::Pooling;

/// What the sentence-transformers files say about inference. Every field is optional: a plain
/// HF folder has none of these files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentenceTransformersConfig {
    /// Pooling mode from the Pooling module's config.
    pub pooling: Option<Pooling>,
    /// Whether `modules.json` lists a Normalize module (`None` without `modules.json`).
    pub normalize: Option<bool>,
    /// `max_seq_length` from `sentence_bert_config.json`.
    pub max_seq_length: Option<usize>,
    /// Named prompts (`query`, `document`, ...): full prefixes, already formatted.
    pub prompts: BTreeMap<String, String>,
    /// Prompt used when none is named.
    pub default_prompt_name: Option<String>,
}

/// Raw bytes of the optional files; `None` when the file is absent.
#[derive(Debug, Clone, Default)]
pub struct SentenceTransformersFiles {
    /// `modules.json`.
    pub modules: Option<Vec<u8>>,
    /// The Pooling module's `config.json` (path taken from `modules.json`, usually `1_Pooling/`).
    pub pooling: Option<Vec<u8>>,
    /// `config_sentence_transformers.json`.
    pub config: Option<Vec<u8>>,
    /// `sentence_bert_config.json`.
    pub sentence_bert_config: Option<Vec<u8>>,
}

impl SentenceTransformersFiles {
    /// Gather the optional files of a folder through `read(relative path)`, which returns
    /// `Ok(None)` for an absent file. The Pooling config's folder comes from `modules.json`
    /// (default `1_Pooling`).
    pub fn gather(mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>>) -> Result<Self> {
        let modules = read("modules.json")?;
        let pooling_dir = match &modules {
            Some(m) => parse_modules(m)?.0,
            None => None,
        };
        let pooling_dir = pooling_dir.unwrap_or_else(|| "1_Pooling".to_string());
        let pooling = read(&format!(
            "{}/config.json",
            pooling_dir.trim_end_matches('/')
        ))?;
        Ok(Self {
            modules,
            pooling,
            config: read("config_sentence_transformers.json")?,
            sentence_bert_config: read("sentence_bert_config.json")?,
        })
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Parse `modules.json`; returns the Pooling module's folder (if any) and whether a Normalize
/// module is present.
pub fn parse_modules(bytes: &[u8]) -> Result<(Option<String>, bool)> {
    let err = |reason: String| QzhouError::SentenceTransformers {
        file: "modules.json".into(),
        reason,
    };
    let modules: Vec<ModuleEntry> =
        serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    let pooling = modules
        .iter()
        .find(|m| m.kind.ends_with(".Pooling"))
        .map(|m| m.path.clone());
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    if let Some(other) = modules.iter().find(|m| {
        !(m.kind.ends_with(".Transformer")
            || m.kind.ends_with(".Pooling")
            || m.kind.ends_with(".Normalize"))
    }) {
        return Err(err(format!(
            "module `{}` is not supported (only Transformer, Pooling, Normalize)",
            other.kind
        )));
    }
    Ok((pooling, normalize))
}

/// Parse a Pooling module config into our [`Pooling`].
pub fn parse_pooling(bytes: &[u8]) -> Result<Pooling> {
    let err = |reason: String| QzhouError::SentenceTransformers {
        file: "1_Pooling/config.json".into(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if v.get("include_prompt").and_then(Value::as_bool) == Some(false) {
        return Err(err(
            "include_prompt = false is not supported (QZhou pools over the prompt too)".into(),
        ));
    }
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
        ("pooling_mode_cls_token", Some(Pooling::FirstToken)),
        ("pooling_mode_max_tokens", None),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let enabled: Vec<_> = modes.iter().filter(|(k, _)| on(k)).collect();
    match enabled.as_slice() {
        [(_, Some(p))] => Ok(*p),
        [(k, None)] => Err(err(format!("`{k}` is not supported"))),
        [] => Err(err("no pooling mode is enabled".into())),
        _ => Err(err(
            "several pooling modes at once (concatenated outputs) are not supported".into(),
        )),
    }
}

impl SentenceTransformersConfig {
    /// Combine whichever files are present.
    pub fn from_files(files: &SentenceTransformersFiles) -> Result<Self> {
        let mut out = Self::default();
        if let Some(m) = &files.modules {
            out.normalize = Some(parse_modules(m)?.1);
        }
        if let Some(p) = &files.pooling {
            out.pooling = Some(parse_pooling(p)?);
        }
        if let Some(c) = &files.config {
            #[derive(Deserialize)]
            struct Raw {
                #[serde(default)]
                prompts: BTreeMap<String, String>,
                default_prompt_name: Option<String>,
            }
            let raw: Raw =
                serde_json::from_slice(c).map_err(|e| QzhouError::SentenceTransformers {
                    file: "config_sentence_transformers.json".into(),
                    reason: e.to_string(),
                })?;
            out.prompts = raw.prompts;
            out.default_prompt_name = raw.default_prompt_name;
        }
        if let Some(s) = &files.sentence_bert_config {
            let v: Value =
                serde_json::from_slice(s).map_err(|e| QzhouError::SentenceTransformers {
                    file: "sentence_bert_config.json".into(),
                    reason: e.to_string(),
                })?;
            out.max_seq_length = v
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|n| n as usize);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qwen3_embedding_style_folder() {
        let files = SentenceTransformersFiles {
            modules: Some(br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#.to_vec()),
            pooling: Some(br#"{"word_embedding_dimension":1024,"pooling_mode_cls_token":false,
                "pooling_mode_mean_tokens":false,"pooling_mode_lasttoken":true,"include_prompt":true}"#.to_vec()),
            config: Some(br#"{"prompts":{"query":"Instruct: x\nQuery:","document":""},"default_prompt_name":null}"#.to_vec()),
            sentence_bert_config: Some(br#"{"max_seq_length":8192,"do_lower_case":false}"#.to_vec()),
        };
        let c = SentenceTransformersConfig::from_files(&files).unwrap();
        assert_eq!(c.pooling, Some(Pooling::LastToken));
        assert_eq!(c.normalize, Some(true));
        assert_eq!(c.max_seq_length, Some(8192));
        assert_eq!(c.prompts["query"], "Instruct: x\nQuery:");
    }

    #[test]
    fn unsupported_pooling_is_an_error_naming_the_file() {
        let e = parse_pooling(br#"{"pooling_mode_max_tokens":true}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("1_Pooling/config.json") && e.contains("max_tokens"),
            "{e}"
        );
        assert!(parse_pooling(
            br#"{"pooling_mode_mean_tokens":true,"pooling_mode_cls_token":true}"#
        )
        .is_err());
        assert!(parse_modules(b"{")
            .unwrap_err()
            .to_string()
            .starts_with("modules.json"));
        let e =
            parse_modules(br#"[{"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#)
                .unwrap_err();
        assert!(e.to_string().contains("Dense"));
    }
}
