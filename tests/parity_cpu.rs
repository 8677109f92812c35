//! Reference parity on the CPU backend (Flex): every fixture embedding vs transformers,
//! cos ≥ 0.99999 and max|Δ| ≤ 1e-5; batch invariance ≤ 1e-5.

mod common;

use burn::backend::Flex;

#[test]
fn flex_matches_transformers_and_is_batch_invariant() {
    common::check_reference_parity::<Flex>(&Default::default(), 0.99999, 1e-5, "flex");
}
