//! What an embedding request asks for, read from its JSON body with errors that name the
//! field: the inputs (texts or token ids), the prompt, truncation and output dimensions,
//! checked against the server's limits and turned into token ids.
//!
//! Shared by the OpenAI (`/v1/embeddings`) and TEI (`/embed`) routes, which differ only in
//! field names and response shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use qzhou_core::embedder::check_vocabulary;
use qzhou_core::{EmbedOptions, Preprocessor, TextKind, Truncation};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Per-request limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Most tokens (after prompts and truncation) in one request.
    pub max_input_tokens: usize,
    /// Most tokens per input (the model's max length).
    pub max_length: usize,
    /// Truncate over-long inputs when the request does not say.
    pub auto_truncate: bool,
    /// Rows of the embedding table (token ids must be below it).
    pub vocab_size: usize,
    /// Embedding dimension.
    pub dim: usize,
}

/// A JSON object body.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parse the bytes of a request (a body over the size limit is a 413, bad JSON a 400).
    pub fn parse(bytes: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        let bytes = bytes.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("body_too_large", format!("request body: {}", e.body_text()))
            } else {
                ApiError::invalid("invalid_body", format!("request body: {}", e.body_text()))
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid(
                "invalid_json",
                "the request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::invalid(
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }

    /// A field's value; absent and `null` are the same.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A string field.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(key, "a string")),
        }
    }

    /// A boolean field.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "a boolean")),
        }
    }

    /// A positive integer field.
    pub fn positive(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n as usize)),
                _ => Err(wrong_type(key, "a positive integer")),
            },
        }
    }
}

fn wrong_type(key: &str, what: &str) -> ApiError {
    ApiError::invalid("invalid_type", format!("`{key}` must be {what}"))
}

/// The inputs of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Texts (prompts apply).
    Texts(Vec<String>),
    /// Token ids of the model's tokenizer, embedded exactly as given.
    Tokens(Vec<Vec<u32>>),
}

impl Inputs {
    /// Read `field`: a string, an array of strings, an array of token ids (one input) or an
    /// array of token-id arrays.
    pub fn read(body: &Body, field: &str) -> Result<Self, ApiError> {
        let shapes =
            "a string, an array of strings, an array of token ids or an array of token-id arrays";
        match body.get(field) {
            None => Err(ApiError::invalid(
                "missing_input",
                format!("`{field}` is required: {shapes}"),
            )),
            Some(Value::String(s)) => Ok(Self::Texts(vec![s.clone()])),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(ApiError::invalid(
                        "empty_input",
                        format!("`{field}` is an empty array"),
                    ));
                }
                match &items[0] {
                    Value::String(_) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| match v {
                            Value::String(s) => Ok(s.clone()),
                            _ => Err(ApiError::invalid(
                                "invalid_type",
                                format!("`{field}[{i}]` must be a string like the items before it"),
                            )),
                        })
                        .collect::<Result<_, _>>()
                        .map(Self::Texts),
                    Value::Number(_) => Ok(Self::Tokens(vec![token_ids(items, field)?])),
                    Value::Array(_) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| match v {
                            Value::Array(ids) => token_ids(ids, &format!("{field}[{i}]")),
                            _ => Err(ApiError::invalid(
                                "invalid_type",
                                format!("`{field}[{i}]` must be a token-id array like the items before it"),
                            )),
                        })
                        .collect::<Result<_, _>>()
                        .map(Self::Tokens),
                    _ => Err(ApiError::invalid(
                        "invalid_type",
                        format!("`{field}` must be {shapes}"),
                    )),
                }
            }
            Some(_) => Err(ApiError::invalid(
                "invalid_type",
                format!("`{field}` must be {shapes}"),
            )),
        }
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Tokens(t) => t.len(),
        }
    }
}

/// Token ids from a JSON array (non-negative integers that fit u32; the vocabulary is checked later).
fn token_ids(items: &[Value], field: &str) -> Result<Vec<u32>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid(
            "empty_input",
            format!("`{field}` is an empty token-id array"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_type",
                        format!("`{field}[{i}]` must be a token id (a non-negative integer)"),
                    )
                })
        })
        .collect()
}

/// The prompt a request asks for: qzhou's extension fields `input_type` (`query` |
/// `document` | `passage`), `task` (a QZhou/MTEB task name), `instruction`, and TEI's
/// `prompt_name`; anything not given comes from the server's defaults. Returns the options and
/// whether the request asked for a prompt at all.
pub fn prompt_options(
    body: &Body,
    defaults: &EmbedOptions,
) -> Result<(EmbedOptions, bool), ApiError> {
    let kind = match body.string("input_type")? {
        None => None,
        Some("query") => Some(TextKind::Query),
        Some("document") | Some("passage") => Some(TextKind::Document),
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_input_type",
                format!("`input_type` is `{other}`; expected `query`, `document` or `passage`"),
            ))
        }
    };
    let task = body.string("task")?.map(str::to_string);
    let instruction = body.string("instruction")?.map(str::to_string);
    let prompt_name = body.string("prompt_name")?.map(str::to_string);
    if task.is_some() && instruction.is_some() {
        return Err(ApiError::invalid(
            "invalid_prompt",
            "give `task` or `instruction`, not both",
        ));
    }
    let asked = kind.is_some() || task.is_some() || instruction.is_some() || prompt_name.is_some();
    let mut options = defaults.clone();
    if let Some(kind) = kind {
        options.kind = kind;
    }
    if task.is_some() || instruction.is_some() {
        options.task = task;
        options.instruction = instruction;
    }
    if prompt_name.is_some() {
        options.prompt_name = prompt_name;
    }
    Ok((options, asked))
}

/// Token ids of a request, ready for the model.
#[derive(Debug)]
pub struct Prepared {
    /// One sequence per input, in order.
    pub ids: Vec<Vec<u32>>,
    /// Tokens in all of them (OpenAI's `usage.prompt_tokens`).
    pub tokens: usize,
}

/// Tokenise (texts) or check (token ids) the inputs against the limits. Texts get the prompt
/// of `options`; token ids are embedded as given, so a prompt asked for with them is an error.
/// Over-long inputs are cut to the max length when `truncate`, else a 413 naming the input.
pub fn prepare(
    preprocessor: &Preprocessor,
    inputs: Inputs,
    options: &EmbedOptions,
    asked_prompt: bool,
    truncate: bool,
    limits: &Limits,
) -> Result<Prepared, ApiError> {
    if inputs.len() > limits.max_inputs {
        return Err(ApiError::too_large(
            "too_many_inputs",
            format!(
                "{} inputs, more than this server's limit of {} per request",
                inputs.len(),
                limits.max_inputs
            ),
        ));
    }
    let ids = match inputs {
        Inputs::Texts(texts) => {
            let truncation = if truncate {
                Truncation::Truncate
            } else {
                Truncation::Error
            };
            preprocessor.tokenize_with(&texts, options, truncation)?
        }
        Inputs::Tokens(mut ids) => {
            if asked_prompt {
                return Err(ApiError::invalid(
                    "prompt_with_token_ids",
                    "prompts apply to text inputs; token-id inputs are embedded exactly as given",
                ));
            }
            check_vocabulary(&ids, limits.vocab_size)?;
            for (index, seq) in ids.iter_mut().enumerate() {
                if seq.len() > limits.max_length {
                    if !truncate {
                        return Err(qzhou_core::QzhouError::TextTooLong {
                            index,
                            tokens: seq.len(),
                            max_length: limits.max_length,
                        }
                        .into());
                    }
                    seq.truncate(limits.max_length);
                }
            }
            ids
        }
    };
    let tokens: usize = ids.iter().map(Vec::len).sum();
    if tokens > limits.max_input_tokens {
        return Err(ApiError::too_large(
            "too_many_tokens",
            format!(
                "{tokens} tokens, more than this server's limit of {} per request",
                limits.max_input_tokens
            ),
        ));
    }
    Ok(Prepared { ids, tokens })
}

/// Keep the first `dims` values of each vector (Matryoshka-style), re-normalised to unit
/// length when the vectors were normalised.
pub fn shorten(
    vectors: &mut [Vec<f32>],
    dims: Option<usize>,
    renormalize: bool,
    limits: &Limits,
) -> Result<(), ApiError> {
    let Some(dims) = dims else { return Ok(()) };
    if dims > limits.dim {
        return Err(ApiError::invalid(
            "invalid_dimensions",
            format!(
                "`dimensions` is {dims}; this model's vectors have {}",
                limits.dim
            ),
        ));
    }
    for v in vectors.iter_mut() {
        v.truncate(dims);
        if renormalize {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }
    Ok(())
}

/// Check `dimensions` before any work is done.
pub fn check_dimensions(dims: Option<usize>, limits: &Limits) -> Result<(), ApiError> {
    shorten(&mut [], dims, false, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Body {
        Body::parse(Ok(Bytes::from(json.to_string()))).unwrap()
    }

    #[test]
    fn inputs_take_every_openai_shape_and_name_bad_items() {
        let read = |j: &str| Inputs::read(&body(j), "input");
        assert_eq!(
            read(r#"{"input": "a"}"#).unwrap(),
            Inputs::Texts(vec!["a".into()])
        );
        assert_eq!(
            read(r#"{"input": ["a", "b"]}"#).unwrap(),
            Inputs::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            read(r#"{"input": [1, 2]}"#).unwrap(),
            Inputs::Tokens(vec![vec![1, 2]])
        );
        assert_eq!(
            read(r#"{"input": [[1], [2, 3]]}"#).unwrap(),
            Inputs::Tokens(vec![vec![1], vec![2, 3]])
        );
        let msg = |j: &str| read(j).unwrap_err().message;
        assert!(msg(r#"{"input": ["a", 3]}"#).contains("`input[1]`"));
        assert!(msg(r#"{"input": [[1], [-2]]}"#).contains("`input[1][0]`"));
        assert!(msg(r#"{"input": []}"#).contains("empty"));
        assert!(msg(r#"{"input": [[]]}"#).contains("empty token-id array"));
        assert!(msg(r#"{"input": 5}"#).contains("must be a string"));
        assert!(msg(r#"{}"#).contains("required"));
        assert!(msg(r#"{"input": [4294967296]}"#).contains("`input[0]`"));
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_400s() {
        for bad in ["", "{", "[1]", "\"x\"", "{\"input\": }"] {
            let e = Body::parse(Ok(Bytes::from(bad))).err().unwrap();
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn shortened_vectors_are_unit_length_prefixes() {
        let limits = Limits {
            max_inputs: 1,
            max_input_tokens: 1,
            max_length: 1,
            auto_truncate: false,
            vocab_size: 10,
            dim: 4,
        };
        let mut v = vec![vec![0.5f32, 0.5, 0.5, 0.5]];
        shorten(&mut v, Some(2), true, &limits).unwrap();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(v[0], vec![s, s]);
        assert!(check_dimensions(Some(5), &limits).is_err());
    }
}
