//! Kernel timing for performance engineers: GPU timestamps around every dispatch when the
//! adapter has them (a wall clock around each submission otherwise), a per-kernel table and a
//! Chrome trace-event file that Perfetto and chrome://tracing open.
//!
//! Off by default and free when off: no query sets are written and nothing is recorded.
//! Switch on with `CONVIRT_PROFILE=1` or `Gpu::set_profiling(true)`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// One timed dispatch.
#[derive(Debug, Clone)]
pub struct KernelEvent {
    pub name: String,
    pub flops: u64,
    pub bytes: u64,
    /// Start, in ns since the profiler started (GPU clock aligned to the submit's CPU time).
    pub start_ns: f64,
    pub dur_ns: f64,
    pub submission: u64,
}

/// One queue submission, timed on the CPU from submit to completion.
#[derive(Debug, Clone)]
pub struct SubmitEvent {
    pub index: u64,
    pub start_ns: f64,
    pub dur_ns: f64,
    pub dispatches: u32,
}

/// Everything recorded while profiling was on.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// `"GPU timestamps"` or `"wall clock (one submission per dispatch)"`.
    pub timer: String,
    pub kernels: Vec<KernelEvent>,
    pub submits: Vec<SubmitEvent>,
}

/// One line of the per-kernel table.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRow {
    pub name: String,
    pub calls: usize,
    pub total_ms: f64,
    pub mean_us: f64,
    pub gflops: f64,
    pub gbps: f64,
}

impl Profile {
    /// Per-kernel totals, the most expensive first.
    pub fn table(&self) -> Vec<KernelRow> {
        let mut by_name: BTreeMap<&str, (usize, f64, u64, u64)> = BTreeMap::new();
        for k in &self.kernels {
            let e = by_name.entry(&k.name).or_default();
            e.0 += 1;
            e.1 += k.dur_ns;
            e.2 += k.flops;
            e.3 += k.bytes;
        }
        let mut rows: Vec<KernelRow> = by_name
            .into_iter()
            .map(|(name, (calls, ns, flops, bytes))| {
                let secs = (ns * 1e-9).max(1e-12);
                KernelRow {
                    name: name.to_string(),
                    calls,
                    total_ms: ns * 1e-6,
                    mean_us: ns * 1e-3 / calls as f64,
                    gflops: flops as f64 / secs * 1e-9,
                    gbps: bytes as f64 / secs * 1e-9,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        rows
    }

    pub fn dispatches(&self) -> usize {
        self.kernels.len()
    }

    pub fn submissions(&self) -> usize {
        self.submits.len()
    }

    /// Chrome trace-event JSON: submissions on the CPU track, kernels on their own GPU track.
    pub fn trace_json(&self) -> String {
        let mut s = String::from("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
        s.push_str("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"CPU submissions\"}},\n");
        s.push_str("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":2,\"args\":{\"name\":\"GPU kernels\"}}");
        for e in &self.submits {
            let _ = write!(
                s,
                ",\n{{\"name\":\"submit {}\",\"cat\":\"submit\",\"ph\":\"X\",\"pid\":1,\"tid\":1,\"ts\":{:.3},\"dur\":{:.3},\"args\":{{\"dispatches\":{}}}}}",
                e.index,
                e.start_ns * 1e-3,
                e.dur_ns * 1e-3,
                e.dispatches
            );
        }
        for k in &self.kernels {
            let _ = write!(
                s,
                ",\n{{\"name\":{},\"cat\":\"kernel\",\"ph\":\"X\",\"pid\":1,\"tid\":2,\"ts\":{:.3},\"dur\":{:.3},\"args\":{{\"flops\":{},\"bytes\":{},\"submission\":{}}}}}",
                json_string(&k.name),
                k.start_ns * 1e-3,
                k.dur_ns * 1e-3,
                k.flops,
                k.bytes,
                k.submission
            );
        }
        s.push_str("\n]}\n");
        s
    }
}

fn json_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel profile ({})", self.timer)?;
        writeln!(
            f,
            "{:<32} {:>7} {:>11} {:>11} {:>10} {:>9}",
            "kernel", "calls", "total ms", "mean us", "GFLOP/s", "GB/s"
        )?;
        let rows = self.table();
        for r in &rows {
            writeln!(
                f,
                "{:<32} {:>7} {:>11.3} {:>11.1} {:>10.2} {:>9.2}",
                r.name, r.calls, r.total_ms, r.mean_us, r.gflops, r.gbps
            )?;
        }
        let total: f64 = rows.iter().map(|r| r.total_ms).sum();
        let per_submit = self.dispatches() as f64 / self.submissions().max(1) as f64;
        writeln!(
            f,
            "{} dispatches in {} submissions ({per_submit:.1} dispatches per submission), {total:.3} ms in kernels",
            self.dispatches(),
            self.submissions()
        )
    }
}
