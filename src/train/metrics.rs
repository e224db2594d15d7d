//! `DIR/metrics.jsonl`: one JSON object per step (step, train_loss, val_loss when evaluated,
//! lr, images_per_s), and the points of the loss curve drawn at the end of a run.

use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

/// The run's metrics file, open for appending, and the curve so far: (step, training loss,
/// validation loss where evaluated).
pub struct Metrics {
    file: std::fs::File,
    pub curve: Vec<(usize, f32, Option<f32>)>,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Invalid {
        op: "train",
        why: format!("{}: {e}", path.display()),
    }
}

impl Metrics {
    /// Opens `dir/metrics.jsonl` for a run at `step`. A fresh run (step 0) starts it anew. A
    /// resumed one keeps the rows up to its checkpoint's step, and plots them with its own:
    /// rows past it came from a run that stopped after that checkpoint, and the resumed run
    /// writes them again. Rows that do not parse (a line cut short by a crash) are dropped
    /// with a warning.
    ///
    /// ```no_run
    /// # use convirt::train::Metrics;
    /// let mut m = Metrics::open(std::path::Path::new("runs/demo"), 0)?;
    /// m.record(0, f32::NAN, Some(3.47), 3e-4, 0.0)?;
    /// # Ok::<(), convirt::Error>(())
    /// ```
    pub fn open(dir: &Path, step: usize) -> Result<Metrics> {
        let path = dir.join("metrics.jsonl");
        let mut kept = String::new();
        let mut curve = Vec::new();
        if step > 0 {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(io_error(&path, e)),
            };
            let mut unreadable = 0;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let parsed = serde_json::from_str::<serde_json::Value>(line).ok();
                let Some((row, s)) = parsed.and_then(|r| {
                    let s = r["step"].as_u64()?;
                    Some((r, s))
                }) else {
                    unreadable += 1;
                    continue;
                };
                if s as usize > step {
                    continue;
                }
                let loss = |k: &str| row[k].as_f64().map(|v| v as f32);
                curve.push((
                    s as usize,
                    loss("train_loss").unwrap_or(f32::NAN),
                    loss("val_loss"),
                ));
                kept.push_str(line);
                kept.push('\n');
            }
            if unreadable > 0 {
                eprintln!(
                    "warning: {}: dropped {unreadable} unreadable line(s)",
                    path.display()
                );
            }
        }
        // The kept rows replace the file whole (a temporary file renamed over it), then the
        // run appends.
        let tmp = dir.join("metrics.jsonl.tmp");
        std::fs::write(&tmp, kept).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(Metrics { file, curve })
    }

    /// Appends the row of `step` (a loss not measured is written as null: JSON has no NaN).
    pub fn record(
        &mut self,
        step: usize,
        train: f32,
        val: Option<f32>,
        lr: f32,
        images_per_s: f64,
    ) -> Result<()> {
        let number = |v: Option<f32>| {
            v.filter(|v| v.is_finite())
                .map_or("null".to_string(), |v| format!("{v:.6}"))
        };
        writeln!(
            self.file,
            "{{\"step\": {step}, \"train_loss\": {}, \"val_loss\": {}, \"lr\": {lr:e}, \"images_per_s\": {images_per_s:.3}}}",
            number(Some(train)),
            number(val)
        )
        .map_err(|e| Error::Invalid {
            op: "train",
            why: format!("metrics.jsonl: {e}"),
        })?;
        self.curve.push((step, train, val));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_fresh_run_starts_anew_and_a_resumed_one_keeps_its_rows_up_to_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("convirt-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Metrics::open(&dir, 0).unwrap();
        m.record(0, f32::NAN, Some(3.5), 1e-3, 0.0).unwrap();
        for step in 1..=5 {
            let val = (step % 2 == 0).then_some(3.0);
            m.record(step, 3.4 - step as f32 * 0.1, val, 1e-3, 20.0)
                .unwrap();
        }
        drop(m);
        // A crash mid-line after step 5.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("metrics.jsonl"))
            .unwrap()
            .write_all(b"{\"step\": 6, \"train_")
            .unwrap();

        // Resumed from the checkpoint of step 4: rows 0-4 stay, 5 and the torn line go.
        let mut m = Metrics::open(&dir, 4).unwrap();
        let steps: Vec<usize> = m.curve.iter().map(|p| p.0).collect();
        assert_eq!(steps, [0, 1, 2, 3, 4]);
        assert!(m.curve[0].1.is_nan() && m.curve[0].2 == Some(3.5));
        assert_eq!((m.curve[2].1, m.curve[2].2), (3.2, Some(3.0)));
        assert_eq!(m.curve[3].2, None);
        m.record(5, 2.9, None, 1e-3, 20.0).unwrap();
        drop(m);
        let rows = lines(&dir);
        assert_eq!(rows.len(), 6);
        assert!(
            rows[5].starts_with("{\"step\": 5, \"train_loss\": 2.9"),
            "{}",
            rows[5]
        );

        // A fresh run in the same folder starts an empty file.
        let m = Metrics::open(&dir, 0).unwrap();
        assert!(m.curve.is_empty() && lines(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
