//! Fresh weights for a config, drawn like `transformers` initialises Qwen2 (`normal(0, σ)`
//! matrices with σ = `initializer_range`, unit norms, zero biases) — for benchmarks and
//! from-scratch training when no checkpoint exists. Served as a [`TensorSource`], so the one
//! loader builds the model.

use crate::config::QwenConfig;
use crate::data::rng::SplitMix64;
use crate::error::{QzhouError, Result};
use crate::weights::{StoredDtype, TensorMeta, TensorSource};

use super::encoder::expected_tensors;

/// Deterministic random weights for `config`: each tensor's values depend only on the seed and
/// the tensor's name.
pub struct RandomInit {
    tensors: Vec<(String, Vec<usize>)>,
    seed: u64,
    std: f64,
}

impl RandomInit {
    /// Weights for `config` from `seed`, σ = `std` (HF's `initializer_range`, 0.02 for Qwen2).
    pub fn new(config: &QwenConfig, seed: u64, std: f64) -> Result<Self> {
        if !(std.is_finite() && std > 0.0) {
            return Err(QzhouError::InvalidOption(format!(
                "initialisation σ must be a positive number, got {std}"
            )));
        }
        Ok(Self {
            tensors: expected_tensors(config),
            seed,
            std,
        })
    }

    fn shape(&self, name: &str) -> Option<&Vec<usize>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

impl TensorSource for RandomInit {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.shape(name).map(|s| TensorMeta {
            shape: s.clone(),
            dtype: Ok(StoredDtype::F32),
        })
    }

    fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let shape = self
            .shape(name)
            .ok_or_else(|| QzhouError::WeightMismatch {
                missing: vec![name.to_string()],
                unexpected: vec![],
                mis_shaped: vec![],
                bad_dtype: vec![],
            })?
            .clone();
        let n: usize = shape.iter().product();
        let values = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            // Seed per tensor from its name (FNV-1a), so tensors are independent of load order.
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.seed;
            for b in name.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            let mut rng = SplitMix64(h);
            let mut uniform = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            let mut v = Vec::with_capacity(n);
            while v.len() < n {
                // Box–Muller: two independent normals per two uniforms.
                let (u1, u2) = (uniform().max(f64::MIN_POSITIVE), uniform());
                let r = (-2.0 * u1.ln()).sqrt() * self.std;
                let t = std::f64::consts::TAU * u2;
                v.push((r * t.cos()) as f32);
                if v.len() < n {
                    v.push((r * t.sin()) as f32);
                }
            }
            v
        };
        Ok((values, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_stated_distribution_and_are_reproducible() {
        let config = QwenConfig::from_json(include_bytes!(
            "../../../../tests/fixtures/tiny-qwen2/config.json"
        ))
        .unwrap();
        let init = RandomInit::new(&config, 7, 0.02).unwrap();
        let (w, shape) = init.read_f32("layers.0.mlp.up_proj.weight").unwrap();
        assert_eq!(shape, vec![64, 32]);
        let n = w.len() as f64;
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        // 2048 draws: the sample mean is within 4 standard errors (4·0.02/√2048 ≈ 0.0018).
        assert!(mean.abs() < 0.0018, "mean {mean}");
        assert!((std - 0.02).abs() < 0.002, "std {std}");
        assert_eq!(w, init.read_f32("layers.0.mlp.up_proj.weight").unwrap().0);
        assert_ne!(
            w,
            RandomInit::new(&config, 8, 0.02)
                .unwrap()
                .read_f32("layers.0.mlp.up_proj.weight")
                .unwrap()
                .0
        );
        assert!(init
            .read_f32("norm.weight")
            .unwrap()
            .0
            .iter()
            .all(|&x| x == 1.0));
        assert!(init
            .read_f32("layers.0.self_attn.q_proj.bias")
            .unwrap()
            .0
            .iter()
            .all(|&x| x == 0.0));
        assert!(init.read_f32("nope").is_err());
    }
}
