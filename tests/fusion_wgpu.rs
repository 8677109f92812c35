//! Burn's kernel fusion on wgpu (Mesa lavapipe in CI), with the vendored fix for
//! tracel-ai/burn#5292 (`vendor/burn-cubecl-fusion`): the fused backend must give what the
//! plain one gives, in the forward pass (transformers' embeddings of the fixtures), over 20
//! GradCache training steps and in the gradients of a 3-chunk GradCache step, before fusion may
//! be used anywhere.

mod common;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::Autodiff;
use common::training_run::{distance, initial_gradients, relative_update_error, run};
use qzhou_core::backends::{Wgpu, WgpuFused};
use qzhou_core::training::Precision;

#[test]
fn fused_forward_matches_transformers() {
    common::check_reference_parity::<WgpuFused>(
        &WgpuDevice::DefaultDevice,
        0.99999,
        1e-4,
        "wgpu+fusion",
    );
}

/// Relative difference of two losses.
fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn fused_training_equals_plain_training() {
    let device = WgpuDevice::DefaultDevice;
    // LR 1e-4: Adam moves every weight with a gradient by ~1e-4 a step, 2e-3 over the run (a
    // tenth of the init σ), so a wrong gradient shows. (At 1e-3 the loss spikes and the two
    // runs' last-bit differences — fusion reorders f32 sums — grow to 8e-4 by chaos alone.)
    // GradCache runs every kind of pass training has — forwards without a graph, the loss's
    // backward to the embeddings, each chunk's forward + backward to the weights — here in 2
    // chunks of the 24 texts (each chunk padded to its own longest text).
    // Measured on lavapipe: losses agree to 3.2e-7, weight updates to 7.8e-6.
    let chunk = 12;
    let plain = run::<Autodiff<Wgpu>>(&device, 20, 1e-4, Precision::F32, chunk);
    let fused = run::<Autodiff<WgpuFused>>(&device, 20, 1e-4, Precision::F32, chunk);
    let worst = plain
        .losses
        .iter()
        .zip(&fused.losses)
        .map(|(p, f)| relative(*f, *p))
        .fold(0.0, f64::max);
    let moved = distance(&plain.trained, &plain.initial) / norm(&plain.initial);
    let weights = relative_update_error(&fused.trained, &plain.trained, &plain.initial);
    eprintln!(
        "chunk {chunk}: losses plain {:.5} -> {:.5}, fused {:.5} -> {:.5}; worst relative \
         loss difference {worst:.2e}; weights moved {:.2} % of their norm; fused weight \
         update vs plain {weights:.2e} (relative)",
        plain.losses[0],
        plain.losses[19],
        fused.losses[0],
        fused.losses[19],
        100.0 * moved,
    );
    assert!(
        moved >= 0.005,
        "the weights must move for the comparison to mean anything"
    );
    assert!(
        worst <= 1e-4,
        "fused losses differ from plain by {worst:e} relative\nplain {:?}\nfused {:?}",
        plain.losses,
        fused.losses
    );
    // Adam divides by √v: where a gradient is tiny, last-bit differences in it give
    // visibly different steps, so the updates agree less tightly than the losses.
    assert!(
        weights <= 1e-2,
        "fused weight updates differ by {weights:e}"
    );
}

/// Three chunks (of 8 texts), each padded to its own longest text, compared where nothing feeds
/// back: the gradients of three batches at the same initial weights (a 20-step Adam run in 3
/// chunks amplifies any difference chaotically — 3.5e-5 on one machine, 1.35e-4 on another).
///
/// **Fails with Burn 0.21's fusion** (vendored fix included): batches 0 and 1 agree to 4e-7,
/// batch 2 — whose first and last chunks pad to 17 tokens — differs by 3.9e-3 relative (max
/// |Δ| 0.7 on a gradient of norm 591), while its losses agree to 1e-7, so the fused *backward*
/// is wrong at that shape. Chunks of 12 or 24 (lengths 18/19) agree to 4e-7. Hence `qzhou
/// train` refuses `--fusion on`; run this with `--ignored` after a Burn upgrade.
#[test]
#[ignore = "Burn 0.21 fused backward gives wrong gradients at a 17-token chunk (3.9e-3 relative)"]
fn fused_gradients_equal_plain_gradients_in_three_chunks() {
    let device = WgpuDevice::DefaultDevice;
    let plain = initial_gradients::<Autodiff<Wgpu>>(&device, 3, 8);
    let fused = initial_gradients::<Autodiff<WgpuFused>>(&device, 3, 8);
    let n = plain.len() / 3;
    let mut worst = 0.0f64;
    for b in 0..3 {
        let (p, f) = (&plain[b * n..(b + 1) * n], &fused[b * n..(b + 1) * n]);
        let error = distance(f, p) / norm(p);
        eprintln!(
            "batch {b}: gradient norm {:.3e}, fused vs plain ‖Δ‖/‖g‖ {error:.2e}",
            norm(p)
        );
        assert!(
            norm(p) > 1e-3,
            "the gradients must not vanish for the comparison to mean anything"
        );
        worst = worst.max(error);
    }
    assert!(
        worst <= 1e-5,
        "fused gradients differ from plain by {worst:e} relative"
    );
}

/// `‖x‖₂`.
fn norm(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
}
