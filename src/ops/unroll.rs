//! The small generator behind register-blocked kernels (gemm.wgsl, attention.wgsl): llvmpipe
//! and other drivers do not unroll loops, and accumulators in an indexed array would live in
//! memory, so a template is written for a 1 x 1 block and unrolled here. Every line after an
//! `// unroll i`, `// unroll j` or `// unroll i j` comment is repeated per block row and/or
//! column, names ending in `_i_j`, `_i` or `_j` get the indices and the constants `I`, `J`
//! become literals; the two block-count constants are rewritten. The template stays valid WGSL
//! on its own (the shader tests validate it as written and every variant compiled).

use crate::gpu::ShaderSource;
use std::sync::Mutex;

/// How to unroll: the name of the variant, the block counts and their constants' names.
pub(crate) struct Unroll<'a> {
    pub template: &'static str,
    /// Appended after the unrolled text (shared snippets such as common/erf.wgsl).
    pub suffix: &'static str,
    pub name: String,
    pub rows: (&'a str, u32),
    pub cols: (&'a str, u32),
}

/// The unrolled shader, generated once per name and kept for the process.
pub(crate) fn unrolled(u: Unroll) -> ShaderSource {
    static CACHE: Mutex<Vec<ShaderSource>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = cache.iter().find(|s| s.name == u.name) {
        return *s;
    }
    let mut out = String::with_capacity(u.template.len() * 2);
    let mut lines = u.template.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(spec) = trimmed.strip_prefix("// unroll ") {
            let body = lines.next().unwrap_or_default();
            let rows = if spec.contains('i') { u.rows.1 } else { 1 };
            let cols = if spec.contains('j') { u.cols.1 } else { 1 };
            for i in 0..rows {
                for j in 0..cols {
                    out.push_str(&rename(body, i, j));
                    out.push('\n');
                }
            }
        } else if let Some((name, n)) = [u.rows, u.cols]
            .into_iter()
            .find(|(c, _)| trimmed.starts_with(&format!("const {c}:")))
        {
            out.push_str(&format!("const {name}: u32 = {n}u;\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(u.suffix);
    let source = ShaderSource {
        name: Box::leak(u.name.into_boxed_str()),
        wgsl: Box::leak(out.into_boxed_str()),
    };
    cache.push(source);
    source
}

/// Renames the block identifiers of one unrolled line for block (i, j).
fn rename(line: &str, i: u32, j: u32) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let renamed = if let Some(stem) = word.strip_suffix("_i_j") {
            format!("{stem}_{i}_{j}")
        } else if let Some(stem) = word.strip_suffix("_i") {
            format!("{stem}_{i}")
        } else if let Some(stem) = word.strip_suffix("_j") {
            format!("{stem}_{j}")
        } else if word == "I" {
            format!("{i}u")
        } else if word == "J" {
            format!("{j}u")
        } else {
            std::mem::take(word)
        };
        out.push_str(&renamed);
        word.clear();
    };
    for ch in line.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrolls_marked_lines_and_renames_block_identifiers() {
        let template = "const R: u32 = 1u;\nconst C: u32 = 1u;\n// unroll i j\nvar acc_i_j = a_i * b_j + f32(I + J);\nkeep();\n";
        let s = unrolled(Unroll {
            template,
            suffix: "// end\n",
            name: "unroll-test-2x3".into(),
            rows: ("R", 2),
            cols: ("C", 3),
        });
        assert!(s
            .wgsl
            .starts_with("const R: u32 = 2u;\nconst C: u32 = 3u;\n"));
        assert!(s.wgsl.contains("var acc_1_2 = a_1 * b_2 + f32(1u + 2u);"));
        assert_eq!(s.wgsl.matches("var acc_").count(), 6);
        assert!(s.wgsl.ends_with("keep();\n// end\n"));
    }
}
