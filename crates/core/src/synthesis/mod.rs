//! Synthetic training data (section 6 of the paper): the constraints every LLM output must meet
//! ([`constraints`]), the text measures they are stated in ([`text`]) and tolerant reading of
//! LLM replies ([`parse`]). The HTTP client and the durable runs are `qzhou synth` (native).

pub mod constraints;
pub mod parse;
pub mod text;

pub use constraints::{
    check_augment, check_hardneg, check_paraphrase, Constraints, Pair, Rejection, Seen, Triple,
};
