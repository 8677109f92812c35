//! Test-only crate: see the `[[test]]` targets in Cargo.toml. Fixtures live in `fixtures/`.
