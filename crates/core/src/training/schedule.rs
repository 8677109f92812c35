//! Learning-rate schedule: linear warm-up then constant, linear or cosine decay.
//!
//! The paper gives 300 warm-up steps and peak LRs (3e-5 stage 1, 2e-5 stage 2) but not the
//! decay (NOT FOUND in `qzhou-paper.md` §5); the default is linear decay to zero, as
//! sentence-transformers, FlagEmbedding and gte train. The formulas are those of
//! `transformers`' `get_{constant,linear,cosine}_schedule_with_warmup`, so step `s` (0-based:
//! the update about to be applied) gets the same LR as there.

use serde::{Deserialize, Serialize};

use crate::error::{QzhouError, Result};

/// Shape of the schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak.
    Constant,
    /// Straight line from the peak to `min_ratio · peak` at the last step.
    #[default]
    Linear,
    /// Half a cosine from the peak to `min_ratio · peak`.
    Cosine,
}

/// `lr(s)` for update `s` of `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Warm-up steps: `lr(s) = peak · s / warmup` for `s < warmup`.
    pub warmup_steps: usize,
    /// Total updates of the run.
    pub total_steps: usize,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Floor of the decay as a fraction of the peak (0 = decay to zero).
    pub min_ratio: f64,
}

impl LrSchedule {
    /// Check the numbers (peak > 0, warm-up ≤ total, 0 ≤ min_ratio ≤ 1).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(QzhouError::InvalidOption(m));
        if !(self.peak.is_finite() && self.peak > 0.0) {
            return bad(format!(
                "learning rate must be a positive number, got {}",
                self.peak
            ));
        }
        if self.total_steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.warmup_steps > self.total_steps {
            return bad(format!(
                "warm-up {} is longer than the run ({} steps)",
                self.warmup_steps, self.total_steps
            ));
        }
        if !(0.0..=1.0).contains(&self.min_ratio) {
            return bad(format!(
                "min LR ratio must be in [0, 1], got {}",
                self.min_ratio
            ));
        }
        Ok(())
    }

    /// Learning rate of update `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = (self.total_steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let factor = match self.decay {
            Decay::Constant => return self.peak,
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.peak * (self.min_ratio + (1.0 - self.min_ratio) * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> LrSchedule {
        LrSchedule {
            peak: 3e-5,
            warmup_steps: 300,
            total_steps: 32_000,
            decay,
            min_ratio: 0.0,
        }
    }

    #[test]
    fn matches_the_transformers_formulas() {
        let s = schedule(Decay::Linear);
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(150) - 1.5e-5).abs() < 1e-18);
        assert_eq!(s.lr_at(300), 3e-5);
        // transformers: lr · (total − s) / (total − warmup)
        assert!((s.lr_at(16_150) - 3e-5 * 15_850.0 / 31_700.0).abs() < 1e-18);
        assert_eq!(s.lr_at(32_000), 0.0);
        let c = schedule(Decay::Cosine);
        // Halfway through the decay: cos(π/2) = 0 → half the peak.
        assert!((c.lr_at(300 + 15_850) - 1.5e-5).abs() < 1e-15);
        assert_eq!(schedule(Decay::Constant).lr_at(20_000), 3e-5);
        let floor = LrSchedule {
            min_ratio: 0.1,
            ..schedule(Decay::Linear)
        };
        assert!((floor.lr_at(32_000) - 3e-6).abs() < 1e-18);
    }

    #[test]
    fn bad_numbers_are_errors() {
        let ok = schedule(Decay::Linear);
        assert!(ok.validate().is_ok());
        for bad in [
            LrSchedule { peak: 0.0, ..ok },
            LrSchedule {
                peak: f64::NAN,
                ..ok
            },
            LrSchedule {
                total_steps: 0,
                ..ok
            },
            LrSchedule {
                warmup_steps: 40_000,
                ..ok
            },
            LrSchedule {
                min_ratio: 1.5,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
