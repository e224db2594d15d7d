//! What an evaluation writes: the `results.json` entries, the Markdown tables shaped like the
//! paper's, the plot of AUC against label fraction, and the contact sheet of retrieval queries
//! with their best candidates.

use super::features::ImageItem;
use super::mean_std;
use super::retrieval::RetrievalScores;
use super::tasks::RetrievalTask;
use crate::data::synthetic::{FINDINGS, FINDING_COLOURS};
use crate::data::{Rng, IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Error, Result};
use crate::plot::{LineChart, Series, PALETTE};
use serde_json::{json, Value};
use std::path::Path;

/// The scores of one (init, method, label fraction) over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub init: &'static str,
    /// "linear" or "fine-tune".
    pub method: &'static str,
    pub fraction: f64,
    /// Mean AUC per seed.
    pub aucs: Vec<f64>,
    pub accuracies: Vec<f64>,
    /// Per-class AUC per seed.
    pub class_aucs: Vec<Vec<Option<f64>>>,
}

impl ProbeResult {
    /// The `results.json` entry: mean and std over seeds, per class too (`names` order).
    pub fn json(&self, names: &[String]) -> Value {
        let (mean_auc, std_auc) = mean_std(&self.aucs);
        let (mean_acc, std_acc) = mean_std(&self.accuracies);
        let per_class: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let v: Vec<f64> = self.class_aucs.iter().filter_map(|c| c[k]).collect();
                let (m, s) = mean_std(&v);
                (
                    n.clone(),
                    json!({"mean_auc": finite(m), "std_auc": finite(s)}),
                )
            })
            .collect();
        json!({"init": self.init, "fraction": self.fraction, "seeds": self.aucs.len(),
               "mean_auc": finite(mean_auc), "std_auc": finite(std_auc),
               "mean_accuracy": finite(mean_acc), "std_accuracy": finite(std_acc),
               "per_class": per_class})
    }
}

/// A JSON number, or null for NaN and infinities (JSON has neither).
pub fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// Retrieval scores of one init and query kind.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalResult {
    pub init: &'static str,
    /// "image" or "text".
    pub query: &'static str,
    pub scores: RetrievalScores,
    /// The category of each query, in the order of `scores.top`.
    pub query_categories: Vec<usize>,
}

/// The tables of `results.md`, shaped like the paper's: linear probe and fine-tuning mean AUC
/// (± std over `seeds`: linear, fine-tune) per init and label fraction, Precision@k per init
/// and query kind, and Precision@5 per category.
pub fn markdown(
    probes: &[ProbeResult],
    retrievals: &[RetrievalResult],
    categories: &[String],
    fractions: &[f64],
    seeds: (usize, usize),
    checkpoint: &Path,
) -> String {
    let mut md = format!("# ConVIRT evaluation of `{}`\n\n", checkpoint.display());
    let pct = |f: f64| format!("{}%", (f * 100.0 * 100.0).round() / 100.0);
    for (method, title, seeds) in [
        ("linear", "Linear probe", seeds.0),
        ("fine-tune", "Fine-tuning", seeds.1),
    ] {
        let rows: Vec<&ProbeResult> = probes.iter().filter(|p| p.method == method).collect();
        if rows.is_empty() {
            continue;
        }
        md += &format!("## {title}: mean AUC (± std over {seeds} seeds)\n\n| init |");
        for &f in fractions {
            md += &format!(" {} labels |", pct(f));
        }
        md += "\n|---|";
        md += &"---:|".repeat(fractions.len());
        md += "\n";
        let mut inits: Vec<&str> = rows.iter().map(|r| r.init).collect();
        inits.dedup();
        for init in inits {
            md += &format!("| {init} |");
            for &f in fractions {
                if let Some(r) = rows.iter().find(|r| r.init == init && r.fraction == f) {
                    let (m, s) = mean_std(&r.aucs);
                    md += &format!(" {:.3} ± {:.3} |", m, s);
                }
            }
            md += "\n";
        }
        md += "\n";
    }
    md += "## Zero-shot retrieval: Precision@k (mean over categories)\n\n| init | query | P@5 | P@10 | P@50 |\n|---|---|---:|---:|---:|\n";
    for r in retrievals {
        md += &format!("| {} | {} |", r.init, r.query);
        for p in &r.scores.mean {
            md += &format!(" {p:.3} |");
        }
        md += "\n";
    }
    md += &format!(
        "\nChance: 1/{} = {:.3} for balanced candidates.\n\n### Precision@5 per category\n\n| init | query |",
        categories.len(),
        1.0 / categories.len().max(1) as f64
    );
    for c in categories {
        md += &format!(" {c} |");
    }
    md += "\n|---|---|";
    md += &"---:|".repeat(categories.len());
    md += "\n";
    for r in retrievals {
        md += &format!("| {} | {} |", r.init, r.query);
        for c in &r.scores.per_category {
            md += &format!(" {:.2} |", c[0]);
        }
        md += "\n";
    }
    md
}

/// A PNG of mean AUC against label fraction (log scale), a line per init and method, error
/// bars of one standard deviation over seeds.
pub fn plot_auc(probes: &[ProbeResult], path: &Path) -> Result<()> {
    let mut series = Vec::new();
    let mut inits: Vec<(&str, &str)> = probes.iter().map(|p| (p.init, p.method)).collect();
    inits.dedup();
    for (i, (init, method)) in inits.iter().enumerate() {
        let rows: Vec<&ProbeResult> = probes
            .iter()
            .filter(|p| p.init == *init && p.method == *method)
            .collect();
        let stats: Vec<(f64, f64)> = rows.iter().map(|r| mean_std(&r.aucs)).collect();
        series.push(Series {
            name: format!("{init} ({method})"),
            color: PALETTE[i % PALETTE.len()],
            width: if *method == "linear" { 3 } else { 1 },
            points: rows
                .iter()
                .zip(&stats)
                .map(|(r, s)| (r.fraction as f32, s.0 as f32))
                .collect(),
            error: Some(stats.iter().map(|s| s.1 as f32).collect()),
            markers: true,
        });
    }
    let fractions: Vec<f64> = probes.iter().map(|p| p.fraction).collect();
    LineChart {
        title: "mean AUC against label fraction".into(),
        x_label: "fraction of labels".into(),
        y_label: "mean AUC".into(),
        log_x: true,
        y_range: None,
        x_range: None,
        x_ticks: Some(
            fractions
                .iter()
                .map(|&f| {
                    (
                        f as f32,
                        format!("{}%", (f * 100.0 * 100.0).round() / 100.0),
                    )
                })
                .collect(),
        ),
        series,
    }
    .save(path)
}

/// A PNG grid: a row per query (its picture, or its sentence), then its five best candidates
/// framed green (same category) or red, each with its findings strip.
pub fn retrieval_sheet(
    task: &RetrievalTask,
    cand_kept: &[usize],
    query_kept: &[usize],
    results: &[RetrievalResult],
    size: usize,
    path: &Path,
) -> Result<()> {
    use image::{Rgb, RgbImage};
    let tile = 96u32;
    let pad = 6u32;
    let caption = 260u32;
    let pick = |query: &str| {
        results
            .iter()
            .find(|r| r.init == "convirt" && r.query == query)
    };
    let mut rows: Vec<(Option<ImageItem>, String, Vec<usize>, usize)> = Vec::new();
    let mut rng = Rng::new(7);
    if let Some(r) = pick("text") {
        for q in pick_queries(&r.query_categories, 4, &mut rng) {
            let (text, cat) = &task.text_queries[q];
            rows.push((None, text.clone(), r.scores.top[q].clone(), *cat));
        }
    }
    if let Some(r) = pick("image") {
        for q in pick_queries(&r.query_categories, 4, &mut rng) {
            let (item, cat) = &task.image_queries[query_kept[q]];
            rows.push((
                Some(item.clone()),
                task.categories[*cat].clone(),
                r.scores.top[q].clone(),
                *cat,
            ));
        }
    }
    let width = caption + 6 * (tile + pad) + pad;
    let height = rows.len().max(1) as u32 * (tile + 2 * pad) + 30;
    let mut img = RgbImage::from_pixel(width, height, Rgb([250, 250, 250]));
    crate::plot::text(
        &mut img,
        pad,
        8,
        "query -> top 5 candidates (green: same category)",
        Rgb([30, 30, 30]),
        2,
    );
    let draw_tile = |img: &mut RgbImage,
                     item: &ImageItem,
                     x: u32,
                     y: u32,
                     frame: Option<Rgb<u8>>|
     -> Result<()> {
        let px = item.pixels(size)?;
        for ty in 0..tile {
            for tx in 0..tile {
                let (sx, sy) = (
                    tx as usize * size / tile as usize,
                    ty as usize * size / tile as usize,
                );
                // Undo the ImageNet normalisation of channel 0 for display.
                let v = px[sy * size + sx] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
                let g = (v.clamp(0.0, 1.0) * 255.0) as u8;
                img.put_pixel(x + tx, y + ty, Rgb([g, g, g]));
            }
        }
        if let Some(c) = frame {
            for t in 0..tile {
                for w in 0..3 {
                    img.put_pixel(x + t, y + w, c);
                    img.put_pixel(x + t, y + tile - 1 - w, c);
                    img.put_pixel(x + w, y + t, c);
                    img.put_pixel(x + tile - 1 - w, y + t, c);
                }
            }
        }
        Ok(())
    };
    for (r, (query_item, text, top, cat)) in rows.iter().enumerate() {
        let y = 30 + r as u32 * (tile + 2 * pad) + pad;
        match query_item {
            Some(item) => {
                draw_tile(&mut img, item, pad, y, None)?;
                crate::plot::text(
                    &mut img,
                    pad + tile + pad,
                    y + tile / 2 - 5,
                    text,
                    Rgb([30, 30, 30]),
                    2,
                );
            }
            None => {
                for (l, line) in wrap(text, 30).iter().take(6).enumerate() {
                    crate::plot::text(
                        &mut img,
                        pad,
                        y + 4 + l as u32 * 14,
                        line,
                        Rgb([30, 30, 30]),
                        2,
                    );
                }
            }
        }
        for (j, &c) in top.iter().take(5).enumerate() {
            let (item, c_cat) = &task.candidates[cand_kept[c]];
            let colour = if c_cat == cat {
                Rgb([40, 170, 60])
            } else {
                Rgb([210, 50, 40])
            };
            let x = caption + pad + j as u32 * (tile + pad);
            draw_tile(&mut img, item, x, y, Some(colour))?;
            let strip = FINDING_COLOURS[*c_cat % FINDINGS.len()];
            for t in 0..tile {
                for w in 0..4 {
                    img.put_pixel(x + t, y + tile + 1 + w, Rgb(strip));
                }
            }
        }
    }
    img.save(path).map_err(|e| Error::Invalid {
        op: "evaluate",
        why: format!("{}: {e}", path.display()),
    })
}

/// Up to `n` queries of different categories, drawn from `rng`.
fn pick_queries(categories: &[usize], n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..categories.len()).collect();
    rng.shuffle(&mut order);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for q in order {
        if !seen.contains(&categories[q]) {
            seen.push(categories[q]);
            out.push(q);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().map_or(0, |l| l.len());
        if last > 0 && last + 1 + word.len() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_hold_mean_and_std_per_fraction() {
        let probes = vec![ProbeResult {
            init: "convirt",
            method: "linear",
            fraction: 0.1,
            aucs: vec![0.6, 0.8],
            accuracies: vec![0.5, 0.5],
            class_aucs: vec![vec![Some(0.6)], vec![Some(0.8)]],
        }];
        let retrievals = vec![RetrievalResult {
            init: "convirt",
            query: "text",
            scores: RetrievalScores {
                ks: vec![5, 10, 50],
                per_category: vec![vec![0.4, 0.3, 0.2]],
                mean: vec![0.4, 0.3, 0.2],
                top: vec![],
            },
            query_categories: vec![],
        }];
        let md = markdown(
            &probes,
            &retrievals,
            &["Edema".into()],
            &[0.1],
            (2, 1),
            Path::new("run"),
        );
        // Sample deviation of 0.6 and 0.8: 0.141.
        assert!(md.contains("| 10% labels |"), "{md}");
        assert!(md.contains("| convirt | 0.700 ± 0.141 |"), "{md}");
        assert!(
            md.contains("| convirt | text | 0.400 | 0.300 | 0.200 |"),
            "{md}"
        );
        assert!(
            !md.contains("Fine-tuning"),
            "no fine-tuning rows, no table: {md}"
        );
        let json = probes[0].json(&["Edema".into()]);
        assert_eq!(json["per_class"]["Edema"]["mean_auc"], 0.7);
        assert_eq!(finite(f64::NAN), Value::Null);
    }
}
