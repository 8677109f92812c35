//! Training curves a person can look at: `curves.svg` next to `metrics.jsonl`, redrawn from
//! that file at every checkpoint — loss (per task when the mix has several), learning rate,
//! gradient norm, and every held-out score over steps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::output::atomic_write;

/// Named series of (step, value) points.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// The curves in `metrics.jsonl`: per-step loss/lr/grad-norm lines and `{"step", "eval"}` lines.
#[derive(Default)]
struct Curves {
    loss: Series,
    lr: Vec<(f64, f64)>,
    grad_norm: Vec<(f64, f64)>,
    eval: Series,
}

fn read(metrics: &str) -> Curves {
    let mut c = Curves::default();
    for line in metrics.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // a line being written
        };
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        if let Some(eval) = v.get("eval").and_then(|e| e.as_object()) {
            for (k, val) in eval {
                match val {
                    serde_json::Value::Number(n) => c
                        .eval
                        .entry(k.clone())
                        .or_default()
                        .push((step, n.as_f64().unwrap_or(f64::NAN))),
                    serde_json::Value::Object(tasks) => {
                        for (task, score) in tasks {
                            if let Some(s) = score.as_f64() {
                                c.eval.entry(task.clone()).or_default().push((step, s));
                            }
                        }
                    }
                    _ => {}
                }
            }
            continue;
        }
        if let (Some(loss), Some(task)) = (
            v.get("loss").and_then(|l| l.as_f64()),
            v.get("task").and_then(|t| t.as_str()),
        ) {
            c.loss
                .entry(format!("loss ({task})"))
                .or_default()
                .push((step, loss));
        }
        if let Some(lr) = v.get("lr").and_then(|l| l.as_f64()) {
            c.lr.push((step, lr));
        }
        if let Some(g) = v.get("grad_norm").and_then(|g| g.as_f64()) {
            c.grad_norm.push((step, g));
        }
    }
    c
}

/// (min, max) of the values, widened when flat so the axis has a range.
fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in points {
        if y.is_finite() {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-12) * 1e-3);
    (lo - pad, hi + pad)
}

/// One panel: `series` against steps `0..=max_step`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &Series,
    max_step: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (lo, hi) = bounds(series.values().flatten());
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_step.max(1.0), lo..hi)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Learning rates are ~1e-5: scientific notation, or every tick reads 0.0.
    let small = hi.abs().max(lo.abs()) < 1e-2;
    let y_label = move |v: &f64| {
        if small {
            format!("{v:.1e}")
        } else {
            format!("{v:.3}")
        }
    };
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
        let marks = points.len() <= 40;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        if marks {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The SVG of the curves in `metrics` (the text of a `metrics.jsonl`).
pub fn render(metrics: &str) -> Result<String> {
    let c = read(metrics);
    let max_step = c
        .loss
        .values()
        .chain(c.eval.values())
        .flatten()
        .map(|p| p.0)
        .fold(0.0, f64::max);
    let mut panels: Vec<(&str, Series)> = vec![("training loss", c.loss)];
    let mut lr = Series::new();
    lr.insert("learning rate".into(), c.lr);
    panels.push(("learning rate", lr));
    let mut grad = Series::new();
    grad.insert("gradient norm (before clipping)".into(), c.grad_norm);
    panels.push(("gradient norm", grad));
    if !c.eval.is_empty() {
        panels.push(("held-out evaluation", c.eval));
    }
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (900, 260 * panels.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, (title, series)) in areas.iter().zip(&panels) {
            panel(area, title, series, max_step)?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

/// Redraw `curves.svg` in `run_dir` from its `metrics.jsonl` (atomically).
pub fn write(run_dir: &Path) -> Result<()> {
    let metrics_path = run_dir.join("metrics.jsonl");
    let metrics = std::fs::read_to_string(&metrics_path)
        .with_context(|| format!("cannot read {}", metrics_path.display()))?;
    let svg = render(&metrics)?;
    atomic_write(&run_dir.join("curves.svg"), |w| {
        Ok(w.write_all(svg.as_bytes())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_drawn() {
        let metrics = [
            r#"{"step":0,"eval":{"tasks":{"STSBenchmark":0.55}}}"#,
            r#"{"step":1,"task":"pair","loss":5.0,"lr":1e-5,"grad_norm":30.0}"#,
            r#"{"step":2,"task":"pair","loss":4.0,"lr":2e-5,"grad_norm":20.0}"#,
            r#"{"step":2,"task":"retrieval","loss":1.5,"lr":2e-5,"grad_norm":2.0}"#,
            r#"{"step":2,"eval":{"accuracy@1":0.4,"tasks":{"STSBenchmark":0.70}}}"#,
            r#"{"step":3,"task":"pa"#,
        ]
        .join("\n");
        let c = read(&metrics);
        assert_eq!(c.loss["loss (pair)"], vec![(1.0, 5.0), (2.0, 4.0)]);
        assert_eq!(c.loss["loss (retrieval)"], vec![(2.0, 1.5)]);
        assert_eq!(c.eval["STSBenchmark"], vec![(0.0, 0.55), (2.0, 0.70)]);
        assert_eq!(c.eval["accuracy@1"], vec![(2.0, 0.4)]);
        assert_eq!(c.lr.len(), 3);
        let svg = render(&metrics).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        for label in [
            "loss (pair)",
            "loss (retrieval)",
            "STSBenchmark",
            "accuracy@1",
            "learning rate",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(
            svg.contains("e-5"),
            "learning-rate ticks in scientific notation"
        );
        // An empty file still renders (axes only) rather than failing the run.
        assert!(render("").unwrap().contains("training loss"));
    }
}
