//! The three training losses against PyTorch float64 on fixed inputs
//! (`scripts/make_loss_fixtures.py` → `fixtures/losses.json`): values and gradients with
//! respect to every embedding input, relative error ≤ 1e-5, on `Autodiff<Flex>`.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use common::json_ints as ints;
use qzhou_core::losses::{classification_infonce, cosent, retrieval_infonce};
use serde_json::Value;

type B = Autodiff<Flex>;

fn floats(v: &Value) -> Vec<f32> {
    common::json_floats(v)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

fn leaf<const D: usize>(v: &Value, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(floats(v), shape), &Default::default()).require_grad()
}

/// max |got − want| / max |want|.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-30);
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

fn check_value(loss: &Tensor<B, 1>, case: &Value) {
    let got = loss.clone().into_scalar() as f64;
    let want = case["value"].as_f64().unwrap();
    let err = (got - want).abs() / want.abs().max(1e-30);
    assert!(
        err <= 1e-5,
        "{}: loss {got} vs torch {want} (rel {err:e})",
        case["name"]
    );
}

fn check_grad<const D: usize>(
    grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
    x: &Tensor<B, D>,
    want: &Value,
    what: &str,
) {
    let got: Vec<f32> = x.grad(grads).unwrap().into_data().to_vec().unwrap();
    let err = rel(&got, &floats(want));
    assert!(err <= 1e-5, "{what}: gradient rel err {err:e}");
    eprintln!("{what}: gradient rel err {err:.2e}");
}

#[test]
fn losses_and_gradients_match_pytorch() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("losses.json")).unwrap())
            .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let (n, d) = (
            case["n"].as_u64().unwrap() as usize,
            case["d"].as_u64().unwrap() as usize,
        );
        let k = case["k"].as_u64().unwrap_or(0) as usize;
        let tau = case["tau"].as_f64().unwrap();
        let name = format!("{} {}", case["loss"], case["name"]);
        match case["loss"].as_str().unwrap() {
            "retrieval" => {
                let q = leaf(&case["queries"], [n, d]);
                let docs = leaf(&case["documents"], [n, 1 + k, d]);
                let loss = retrieval_infonce(q.clone(), docs.clone(), tau).unwrap();
                check_value(&loss, case);
                let grads = loss.backward();
                check_grad(
                    &grads,
                    &q,
                    &case["grad_queries"],
                    &format!("{name} queries"),
                );
                check_grad(
                    &grads,
                    &docs,
                    &case["grad_documents"],
                    &format!("{name} documents"),
                );
            }
            "cosent" => {
                let a = leaf(&case["first"], [n, d]);
                let b = leaf(&case["second"], [n, d]);
                let loss = cosent(a.clone(), b.clone(), &floats(&case["scores"]), tau).unwrap();
                check_value(&loss, case);
                let grads = loss.backward();
                check_grad(&grads, &a, &case["grad_first"], &format!("{name} first"));
                check_grad(&grads, &b, &case["grad_second"], &format!("{name} second"));
            }
            "classification" => {
                let t = leaf(&case["anchors"], [n, d]);
                let p = leaf(&case["positives"], [n, d]);
                let negs = leaf(&case["negatives"], [n, k, d]);
                let loss = classification_infonce(
                    t.clone(),
                    p.clone(),
                    negs.clone(),
                    &ints(&case["labels"]),
                    &ints(&case["negative_labels"]),
                    tau,
                )
                .unwrap();
                check_value(&loss, case);
                let grads = loss.backward();
                check_grad(
                    &grads,
                    &t,
                    &case["grad_anchors"],
                    &format!("{name} anchors"),
                );
                check_grad(
                    &grads,
                    &p,
                    &case["grad_positives"],
                    &format!("{name} positives"),
                );
                check_grad(
                    &grads,
                    &negs,
                    &case["grad_negatives"],
                    &format!("{name} negatives"),
                );
            }
            other => panic!("unknown loss {other}"),
        }
    }
}

#[test]
fn bad_shapes_and_temperatures_are_errors() {
    let dev = Default::default();
    let q = Tensor::<Flex, 2>::ones([2, 4], &dev);
    let err = retrieval_infonce(q.clone(), Tensor::ones([3, 1, 4], &dev), 0.02).unwrap_err();
    assert!(err.to_string().contains("[3, 1, 4]"), "{err}");
    assert!(retrieval_infonce(q.clone(), Tensor::ones([2, 1, 4], &dev), 0.0).is_err());
    assert!(cosent(q.clone(), q.clone(), &[1.0], 0.02).is_err());
    assert!(cosent(q.clone(), q.clone(), &[1.0, f32::NAN], 0.02).is_err());
    let err = classification_infonce(
        q.clone(),
        q,
        Tensor::ones([2, 1, 4], &dev),
        &[0, 1],
        &[0],
        0.02,
    )
    .unwrap_err();
    assert!(err.to_string().contains("negative labels"), "{err}");
}
