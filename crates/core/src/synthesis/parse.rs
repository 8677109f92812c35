//! Tolerant reading of LLM replies: servers without JSON mode wrap JSON in prose or Markdown
//! fences, rename keys, or return a bare list. [`json_items`] finds the first JSON object or
//! array in the reply and returns its list of items; the `*_from` functions read the items of
//! each pipeline, naming what is missing.

use serde_json::Value;

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply holds no JSON object or array")]
    NoJson,
    #[error("the reply's JSON holds no list of items")]
    NoList,
    #[error("item {index}: {problem}")]
    Item { index: usize, problem: String },
}

/// The first complete JSON value starting at a `{` or `[` in `reply`.
fn first_json(reply: &str) -> Option<Value> {
    for (i, c) in reply.char_indices() {
        if c == '{' || c == '[' {
            let mut stream = serde_json::Deserializer::from_str(&reply[i..]).into_iter::<Value>();
            if let Some(Ok(v)) = stream.next() {
                return Some(v);
            }
        }
    }
    None
}

/// The list of items in `reply`: a top-level array, or the first array-valued field of a
/// top-level object (`{"pairs": [...]}`), or a lone object as a one-item list.
pub fn json_items(reply: &str) -> Result<Vec<Value>, ParseError> {
    match first_json(reply).ok_or(ParseError::NoJson)? {
        Value::Array(items) => Ok(items),
        Value::Object(map) => {
            if let Some(items) = map.values().find_map(|v| v.as_array()) {
                return Ok(items.clone());
            }
            if map.values().all(|v| v.is_string()) && !map.is_empty() {
                return Ok(vec![Value::Object(map)]);
            }
            Err(ParseError::NoList)
        }
        _ => Err(ParseError::NoList),
    }
}

/// A string field of `item` under any of `names` (case-insensitive).
fn field(item: &Value, names: &[&str], index: usize) -> Result<String, ParseError> {
    let map = item.as_object().ok_or_else(|| ParseError::Item {
        index,
        problem: format!("expected an object, got {item}"),
    })?;
    for (k, v) in map {
        if names.iter().any(|n| k.eq_ignore_ascii_case(n)) {
            return v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ParseError::Item {
                    index,
                    problem: format!("`{k}` is not a string"),
                });
        }
    }
    Err(ParseError::Item {
        index,
        problem: format!("no `{}` field", names[0]),
    })
}

const QUERY: &[&str] = &["query", "q", "question"];
const POS: &[&str] = &["pos", "positive", "passage", "document", "answer"];
const NEG: &[&str] = &["neg", "negative", "hard_negative", "hard_neg"];

/// Paraphrase items: `{"query", "pos"}` each; an unreadable item is an error of its own.
pub fn pairs_from(items: &[Value]) -> Vec<Result<super::Pair, ParseError>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Ok(super::Pair {
                query: field(item, QUERY, i)?,
                pos: field(item, POS, i)?,
            })
        })
        .collect()
}

/// Augment items: `{"query", "pos", "neg"}` each.
pub fn triples_from(items: &[Value]) -> Vec<Result<super::Triple, ParseError>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Ok(super::Triple {
                query: field(item, QUERY, i)?,
                pos: field(item, POS, i)?,
                neg: field(item, NEG, i)?,
            })
        })
        .collect()
}

/// Hard-negative items: strings, or objects with a `neg` field.
pub fn negatives_from(items: &[Value]) -> Vec<Result<String, ParseError>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => field(other, NEG, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_json_in_prose_and_fences() {
        let reply = "Sure! Here you go:\n```json\n{\"pairs\": [{\"query\": \"a\", \"positive\": \"b\"}]}\n```\nHope it helps {not json";
        let items = json_items(reply).unwrap();
        let pairs = pairs_from(&items);
        assert_eq!(pairs[0].as_ref().unwrap().pos, "b");
        assert_eq!(json_items("[\"x\", \"y\"]").unwrap().len(), 2);
        assert_eq!(json_items("no json here"), Err(ParseError::NoJson));
        assert_eq!(json_items("{\"count\": 3}"), Err(ParseError::NoList));
        // A broken first candidate is skipped for a later complete one.
        assert_eq!(json_items("{oops [\"z\"]").unwrap(), vec![Value::from("z")]);
        let bad = pairs_from(&json_items("[{\"query\": 1, \"pos\": \"p\"}, 7]").unwrap());
        assert!(matches!(&bad[0], Err(ParseError::Item { index: 0, .. })));
        assert!(matches!(&bad[1], Err(ParseError::Item { index: 1, .. })));
        let negs =
            negatives_from(&json_items("{\"negatives\": [\"n1\", {\"neg\": \"n2\"}]}").unwrap());
        assert_eq!(negs, vec![Ok("n1".to_string()), Ok("n2".to_string())]);
    }
}
