//! Real image-report pairs for training: a manifest file listing them ([`ManifestDataset`]), or
//! the MIMIC-CXR-JPG folder tree as PhysioNet ships it ([`MimicDataset`]).
//!
//! Both only list the pairs when opened (paths and, for a manifest, report text and labels);
//! images and report files are read when an item is asked for, so opening a dataset of hundreds
//! of thousands of images takes seconds, and a missing or corrupt file costs that item only (the
//! [`PairLoader`](super::loader::PairLoader) skips and counts it). Every error names the file,
//! and for a manifest the line, it comes from.

use super::image::{load_image, Image};
use super::loader::Dataset;
use super::report::sections;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which part of a dataset an item belongs to, as a manifest's `split` column says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Validate,
    Test,
}

impl Split {
    /// `train`, `validate` / `val` / `validation`, `test` (any case, surrounding blanks
    /// ignored); `None` for anything else.
    pub fn parse(name: &str) -> Option<Split> {
        match name.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "validate" | "val" | "validation" => Some(Split::Validate),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// The canonical name: `train`, `validate` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validate => "validate",
            Split::Test => "test",
        }
    }
}

/// Where an item's report is: written in the manifest, or in a file read with the item (so
/// that opening a large dataset does not read every report).
#[derive(Debug, Clone, PartialEq)]
pub enum ReportSource {
    Text(Arc<str>),
    File(Arc<Path>),
}

/// Reads a report file; the error names it. Bytes that are not UTF-8 become U+FFFD rather than
/// costing the item: reports are English prose and a stray byte changes nothing.
fn read_report(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid {
        op: "report",
        why: format!("{}: cannot read the report: {e}", path.display()),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The FINDINGS / IMPRESSION sentences of `text` ([`sections`]); an error naming `origin` when
/// there are none, since a pair without a sentence cannot be trained on.
fn report_sentences(text: &str, origin: impl Display) -> Result<Vec<String>> {
    let sentences = sections(text);
    if sentences.is_empty() {
        return Err(Error::Invalid {
            op: "report",
            why: format!("{origin}: the report has no sentence"),
        });
    }
    Ok(sentences)
}

/// One manifest row, checked.
#[derive(Debug, Clone)]
struct Row {
    image: PathBuf,
    report: ReportSource,
    split: Option<Split>,
    labels: Box<[f32]>,
    /// The row's line in the manifest (its first line, for a CSV record spanning several).
    line: usize,
}

/// Image-report pairs listed in a CSV or JSON-lines manifest.
///
/// Columns (CSV header) or keys (one JSON object per line), matched without regard to case:
/// - `image` or `path`: the image, relative to the manifest's folder or absolute;
/// - `report` or `text`: the report's text, or `report_path`: a file holding it (relative to
///   the manifest's folder or absolute); every row needs exactly one of them;
/// - `split` (optional): `train`, `validate` / `val`, `test`, or blank;
/// - anything else is a label: a number (1 positive, 0 negative, -1 uncertain, as CheXpert
///   writes them) or blank / missing / `null` for "not stated", kept as NaN.
///
/// A row that breaks these rules makes [`open`](ManifestDataset::open) fail with an error
/// naming the manifest and the line; images and report files are only read by
/// [`get`](Dataset::get), whose errors name them.
#[derive(Debug, Clone)]
pub struct ManifestDataset {
    file: Arc<Path>,
    label_names: Arc<[String]>,
    rows: Vec<Row>,
}

/// What a column or key of a manifest holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Image,
    ReportText,
    ReportPath,
    Split,
    Label,
}

fn role(key: &str) -> Role {
    match key.trim().to_ascii_lowercase().as_str() {
        "image" | "path" => Role::Image,
        "report" | "text" => Role::ReportText,
        "report_path" => Role::ReportPath,
        "split" => Role::Split,
        _ => Role::Label,
    }
}

/// One value of a row as the file gives it.
enum Cell {
    Text(String),
    Number(f64),
    Missing,
}

impl Cell {
    /// The text of a non-blank value; `None` for blank or missing.
    fn text(&self) -> Option<String> {
        match self {
            Cell::Text(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Cell::Number(x) => Some(x.to_string()),
            _ => None,
        }
    }
}

/// Builds the rows of one manifest, naming it and the line in every error.
struct Parser {
    file: Arc<Path>,
    dir: PathBuf,
    label_names: Vec<String>,
    label_index: HashMap<String, usize>,
    rows: Vec<Row>,
}

impl Parser {
    fn fail(&self, line: usize, why: impl Display) -> Error {
        Error::Invalid {
            op: "ManifestDataset",
            why: format!("{} line {line}: {why}", self.file.display()),
        }
    }

    fn label(&mut self, name: &str) -> usize {
        if let Some(&k) = self.label_index.get(name) {
            return k;
        }
        self.label_names.push(name.to_string());
        self.label_index
            .insert(name.to_string(), self.label_names.len() - 1);
        self.label_names.len() - 1
    }

    /// `value` as a label: a finite number, or NaN when blank / missing.
    fn label_value(&self, line: usize, key: &str, value: &Cell) -> Result<f32> {
        let bad = || {
            self.fail(
                line,
                format!(
                    "label `{key}` is {}, not a number (1, 0, -1) or blank",
                    match value {
                        Cell::Text(s) => format!("{s:?}"),
                        _ => "not finite".to_string(),
                    }
                ),
            )
        };
        let x = match value {
            Cell::Missing => return Ok(f32::NAN),
            Cell::Text(s) if s.trim().is_empty() => return Ok(f32::NAN),
            Cell::Text(s) => s.trim().parse::<f64>().map_err(|_| bad())?,
            Cell::Number(x) => *x,
        };
        if !x.is_finite() {
            return Err(bad());
        }
        Ok(x as f32)
    }

    /// `path` relative to the manifest's folder (an absolute path stays as it is).
    fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// Checks one row and adds it.
    fn add(&mut self, line: usize, cells: Vec<(String, Cell)>) -> Result<()> {
        let mut image: Option<(String, String)> = None;
        let mut text: Option<(String, String)> = None;
        let mut report_path: Option<String> = None;
        let mut split = None;
        let mut labels = vec![f32::NAN; self.label_names.len()];
        for (key, cell) in &cells {
            let role = role(key);
            if role == Role::Label {
                let value = self.label_value(line, key, cell)?;
                let k = self.label(key.trim());
                if k >= labels.len() {
                    labels.resize(k + 1, f32::NAN);
                }
                labels[k] = value;
                continue;
            }
            let Some(value) = cell.text() else {
                continue;
            };
            let once = |slot: &Option<(String, String)>| match slot {
                Some((other, _)) => Err(self.fail(
                    line,
                    format!("both `{other}` and `{key}` are given; keep one"),
                )),
                None => Ok(Some((key.clone(), value.clone()))),
            };
            match role {
                Role::Image => image = once(&image)?,
                Role::ReportText => text = once(&text)?,
                Role::ReportPath => report_path = Some(value),
                Role::Split => {
                    split = Some(Split::parse(&value).ok_or_else(|| {
                        self.fail(
                            line,
                            format!(
                                "split {value:?} is none of train, validate (or val), test or blank"
                            ),
                        )
                    })?)
                }
                Role::Label => unreachable!("labels are handled above"),
            }
        }
        let (_, image) =
            image.ok_or_else(|| self.fail(line, "no image (give `image` or `path`)"))?;
        let report = match (text, report_path) {
            (Some((_, text)), None) => ReportSource::Text(text.into()),
            (None, Some(path)) => ReportSource::File(self.resolve(&path).into()),
            (Some((key, _)), Some(_)) => {
                return Err(self.fail(
                    line,
                    format!("both a report text (`{key}`) and `report_path` are given; keep one"),
                ))
            }
            (None, None) => {
                return Err(self.fail(
                    line,
                    "no report (give its text as `report` or `text`, or a file as `report_path`)",
                ))
            }
        };
        self.rows.push(Row {
            image: self.resolve(&image),
            report,
            split,
            labels: labels.into(),
            line,
        });
        Ok(())
    }

    /// A CSV reading error at its line. The csv crate's own message repeats the position; this
    /// says it once, in the words of the other errors.
    fn csv_fail(&self, e: csv::Error) -> Error {
        let line = e.position().map_or(1, |p| p.line() as usize);
        let why = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("{len} fields where the header names {expected_len} columns"),
            csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text ({err})"),
            _ => e.to_string(),
        };
        self.fail(line, why)
    }

    fn read_csv(&mut self) -> Result<()> {
        let file = std::fs::File::open(&self.file).map_err(|e| Error::Invalid {
            op: "ManifestDataset",
            why: format!("{}: cannot open the manifest: {e}", self.file.display()),
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(file);
        let header = reader.headers().map_err(|e| self.csv_fail(e))?.clone();
        if header.iter().all(str::is_empty) {
            return Err(self.fail(1, "no header line (the first line names the columns)"));
        }
        for (k, name) in header.iter().enumerate() {
            if name.is_empty() {
                return Err(self.fail(1, format!("column {} has no name", k + 1)));
            }
            if header.iter().take(k).any(|other| other == name) {
                return Err(self.fail(1, format!("column `{name}` appears twice")));
            }
            if role(name) == Role::Label {
                self.label(name);
            }
        }
        for record in reader.records() {
            let record = record.map_err(|e| self.csv_fail(e))?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let cells = header
                .iter()
                .zip(record.iter())
                .map(|(k, v)| (k.to_string(), Cell::Text(v.to_string())))
                .collect();
            self.add(line, cells)?;
        }
        Ok(())
    }

    fn read_jsonl(&mut self) -> Result<()> {
        let bytes = std::fs::read(&self.file).map_err(|e| Error::Invalid {
            op: "ManifestDataset",
            why: format!("{}: cannot read the manifest: {e}", self.file.display()),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Invalid {
            op: "ManifestDataset",
            why: format!("{}: not UTF-8 text: {e}", self.file.display()),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for (k, line_text) in text.lines().enumerate() {
            let line = k + 1;
            let trimmed = line_text.trim();
            if trimmed.is_empty() {
                continue;
            }
            if trimmed == "[" && self.rows.is_empty() {
                return Err(self.fail(
                    line,
                    "a JSON array; write one JSON object per line (JSON lines) instead",
                ));
            }
            let value: Value = serde_json::from_str(trimmed)
                .map_err(|e| self.fail(line, format!("not valid JSON: {e}")))?;
            let Value::Object(object) = value else {
                return Err(self.fail(line, "not a JSON object"));
            };
            let mut cells = Vec::with_capacity(object.len());
            for (key, value) in object {
                let cell = match value {
                    Value::String(s) => Cell::Text(s),
                    Value::Number(n) => Cell::Number(n.as_f64().unwrap_or(f64::NAN)),
                    Value::Null => Cell::Missing,
                    other => {
                        return Err(self.fail(
                            line,
                            format!("`{key}` is {other}; use a string, a number or null"),
                        ))
                    }
                };
                cells.push((key, cell));
            }
            self.add(line, cells)?;
        }
        Ok(())
    }
}

impl ManifestDataset {
    /// Reads the manifest at `path`: CSV when its name ends in `.csv`, JSON lines for `.jsonl`,
    /// `.ndjson` or `.json` (one object per line). The manifest must list at least one row; see
    /// the type's documentation for the columns.
    pub fn open(path: &Path) -> Result<ManifestDataset> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let csv = match extension.as_deref() {
            Some("csv") => true,
            Some("jsonl" | "ndjson" | "json") => false,
            _ => {
                return Err(Error::Invalid {
                    op: "ManifestDataset",
                    why: format!(
                        "{}: unknown manifest format; name it .csv or .jsonl",
                        path.display()
                    ),
                })
            }
        };
        let mut parser = Parser {
            file: path.into(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            label_names: Vec::new(),
            label_index: HashMap::new(),
            rows: Vec::new(),
        };
        if csv {
            parser.read_csv()?;
        } else {
            parser.read_jsonl()?;
        }
        if parser.rows.is_empty() {
            return Err(Error::Invalid {
                op: "ManifestDataset",
                why: format!("{}: the manifest lists no image", path.display()),
            });
        }
        // Labels first met on a later JSON line are missing (NaN) on the earlier ones.
        let n = parser.label_names.len();
        for row in &mut parser.rows {
            if row.labels.len() < n {
                let mut labels = row.labels.to_vec();
                labels.resize(n, f32::NAN);
                row.labels = labels.into();
            }
        }
        Ok(ManifestDataset {
            file: parser.file,
            label_names: parser.label_names.into(),
            rows: parser.rows,
        })
    }

    /// The manifest file this dataset was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The label columns, in the order of the CSV header (for JSON lines: in the order they
    /// first appear).
    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// Item `i`'s label values, one per [`label_names`](Self::label_names) entry: 1, 0, -1
    /// (uncertain) or NaN (not stated).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn labels(&self, i: usize) -> &[f32] {
        &self.rows[i].labels
    }

    /// Item `i`'s image file.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn path(&self, i: usize) -> &Path {
        &self.rows[i].image
    }

    /// Item `i`'s split (`None` when the manifest leaves it blank or has no `split` column).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn item_split(&self, i: usize) -> Option<Split> {
        self.rows[i].split
    }

    /// Item `i`'s line in the manifest, for messages.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn line(&self, i: usize) -> usize {
        self.rows[i].line
    }

    /// Whether any row names a split; when none does, a caller picks its own validation items.
    pub fn has_splits(&self) -> bool {
        self.rows.iter().any(|r| r.split.is_some())
    }

    /// The items of split `name` ([`Split::parse`]: "val" and "validate" are the same), in
    /// manifest order; empty when no row has it, or when `name` is no split name at all.
    pub fn split(&self, name: &str) -> ManifestDataset {
        let wanted = Split::parse(name);
        self.filtered(|r| wanted.is_some() && r.split == wanted)
    }

    /// Items `range` (in manifest order), e.g. to hold out a tail for validation.
    ///
    /// # Panics
    /// When `range` goes past `len()`.
    pub fn subset(&self, range: Range<usize>) -> ManifestDataset {
        ManifestDataset {
            file: self.file.clone(),
            label_names: self.label_names.clone(),
            rows: self.rows[range].to_vec(),
        }
    }

    fn filtered(&self, keep: impl Fn(&Row) -> bool) -> ManifestDataset {
        ManifestDataset {
            file: self.file.clone(),
            label_names: self.label_names.clone(),
            rows: self.rows.iter().filter(|r| keep(r)).cloned().collect(),
        }
    }

    fn row(&self, i: usize) -> Result<&Row> {
        self.rows.get(i).ok_or_else(|| Error::Invalid {
            op: "ManifestDataset",
            why: format!(
                "{}: item {i} of {} items",
                self.file.display(),
                self.rows.len()
            ),
        })
    }

    /// Item `i`'s report text (read from its file when the manifest gives a `report_path`).
    pub fn report(&self, i: usize) -> Result<String> {
        match &self.row(i)?.report {
            ReportSource::Text(text) => Ok(text.to_string()),
            ReportSource::File(path) => read_report(path),
        }
    }

    /// Item `i`'s FINDINGS / IMPRESSION sentences without decoding its image (e.g. to train a
    /// vocabulary); an error when the report has none.
    pub fn sentences(&self, i: usize) -> Result<Vec<String>> {
        let row = self.row(i)?;
        match &row.report {
            ReportSource::Text(text) => report_sentences(
                text,
                format_args!("{} line {}", self.file.display(), row.line),
            ),
            ReportSource::File(path) => report_sentences(&read_report(path)?, path.display()),
        }
    }
}

impl Dataset for ManifestDataset {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn get(&self, i: usize) -> Result<(Image, Vec<String>)> {
        let sentences = self.sentences(i)?;
        Ok((load_image(&self.rows[i].image)?, sentences))
    }
}

/// One image of the MIMIC-CXR-JPG tree and its study's report file.
#[derive(Debug, Clone, PartialEq)]
struct MimicItem {
    image: PathBuf,
    report: Arc<Path>,
}

/// The MIMIC-CXR-JPG tree: one item per image `files/pXX/pXXXXXXXX/sXXXXXXXX/*.jpg`, paired
/// with its study's report `files/pXX/pXXXXXXXX/sXXXXXXXX.txt` (from MIMIC-CXR's
/// `mimic-cxr-reports.zip`), in sorted path order so that a run is reproducible.
///
/// Studies without a report file are skipped and counted ([`skipped`](Self::skipped)) rather
/// than failing the whole tree, since a partial download is common; images and reports are
/// read by [`get`](Dataset::get).
#[derive(Debug, Clone, PartialEq)]
pub struct MimicDataset {
    root: PathBuf,
    items: Vec<MimicItem>,
    skipped: usize,
}

/// `root/files` when it exists, else `root` itself (given as the `files` folder).
fn files_folder(root: &Path) -> PathBuf {
    let files = root.join("files");
    if files.is_dir() {
        files
    } else {
        root.to_path_buf()
    }
}

fn walk_error(dir: &Path, e: std::io::Error) -> Error {
    Error::Invalid {
        op: "MimicDataset",
        why: format!("{}: cannot list the folder: {e}", dir.display()),
    }
}

/// The entries of `dir` (sorted by name) that pass `keep(name, path)`; hidden ones left out.
fn sorted_entries(
    dir: &Path,
    keep: impl Fn(&str, &Path) -> bool,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| walk_error(dir, e))? {
        let entry = entry.map_err(|e| walk_error(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // MIMIC names are ASCII; anything else is not part of the tree
        };
        let path = entry.path();
        if !name.starts_with('.') && keep(&name, &path) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Sub-folders of `dir` whose name starts with `prefix` (`p` for patient groups and patients,
/// `s` for studies); anything else there (index.html from a web download, reports) is ignored.
fn folders(dir: &Path, prefix: char) -> Result<Vec<(String, PathBuf)>> {
    sorted_entries(dir, |name, path| name.starts_with(prefix) && path.is_dir())
}

fn is_jpeg(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg")
}

impl MimicDataset {
    /// The tree at `root`: the MIMIC-CXR-JPG folder (holding `files/`) or its `files` folder,
    /// with the reports unpacked into the same tree.
    pub fn open(root: &Path) -> Result<MimicDataset> {
        MimicDataset::open_with_reports(root, root)
    }

    /// Images under `images_root` and reports under `reports_root` (each the folder holding
    /// `files/`, or `files` itself), for when the reports were unpacked elsewhere.
    pub fn open_with_reports(images_root: &Path, reports_root: &Path) -> Result<MimicDataset> {
        for root in [images_root, reports_root] {
            if !root.is_dir() {
                return Err(Error::Invalid {
                    op: "MimicDataset",
                    why: format!("{}: not a folder", root.display()),
                });
            }
        }
        let (images, reports) = (files_folder(images_root), files_folder(reports_root));
        let mut items = Vec::new();
        let (mut studies, mut skipped) = (0usize, 0usize);
        let mut first_missing: Option<PathBuf> = None;
        for (group, group_dir) in folders(&images, 'p')? {
            for (patient, patient_dir) in folders(&group_dir, 'p')? {
                for (study, study_dir) in folders(&patient_dir, 's')? {
                    let jpegs =
                        sorted_entries(&study_dir, |name, path| is_jpeg(name) && path.is_file())?;
                    if jpegs.is_empty() {
                        continue;
                    }
                    studies += 1;
                    let report = reports
                        .join(&group)
                        .join(&patient)
                        .join(format!("{study}.txt"));
                    if !report.is_file() {
                        skipped += 1;
                        first_missing.get_or_insert(report);
                        continue;
                    }
                    let report: Arc<Path> = report.into();
                    items.extend(jpegs.into_iter().map(|(_, image)| MimicItem {
                        image,
                        report: report.clone(),
                    }));
                }
            }
        }
        let first_missing = first_missing.map_or(String::new(), |p| p.display().to_string());
        if studies == 0 {
            return Err(Error::Invalid {
                op: "MimicDataset",
                why: format!(
                    "{}: no images found (expected files/pXX/pXXXXXXXX/sXXXXXXXX/*.jpg under it, \
                     or pXX/pXXXXXXXX/sXXXXXXXX/*.jpg when it is the files folder)",
                    images_root.display()
                ),
            });
        }
        if items.is_empty() {
            return Err(Error::Invalid {
                op: "MimicDataset",
                why: format!(
                    "{}: none of its {studies} studies has a report file (the first looked \
                     for: {first_missing}); unpack mimic-cxr-reports.zip into the tree or give \
                     the reports folder separately",
                    images_root.display()
                ),
            });
        }
        if skipped > 0 {
            eprintln!(
                "convirt: {skipped} of the {studies} studies under {} have no report file and \
                 are skipped (the first: {first_missing})",
                images_root.display()
            );
        }
        Ok(MimicDataset {
            root: images_root.to_path_buf(),
            items,
            skipped,
        })
    }

    /// The images root this dataset was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The studies left out when opening because they have no report file.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Item `i`'s image file.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn path(&self, i: usize) -> &Path {
        &self.items[i].image
    }

    /// Item `i`'s report file (its study's).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn report_path(&self, i: usize) -> &Path {
        &self.items[i].report
    }

    /// Items `range` (in path order), e.g. to hold out a tail for validation: the tail holds
    /// whole patients but for the first one, since paths sort by patient.
    ///
    /// # Panics
    /// When `range` goes past `len()`.
    pub fn subset(&self, range: Range<usize>) -> MimicDataset {
        MimicDataset {
            root: self.root.clone(),
            items: self.items[range].to_vec(),
            skipped: self.skipped,
        }
    }

    fn item(&self, i: usize) -> Result<&MimicItem> {
        self.items.get(i).ok_or_else(|| Error::Invalid {
            op: "MimicDataset",
            why: format!(
                "{}: item {i} of {} items",
                self.root.display(),
                self.items.len()
            ),
        })
    }

    /// Item `i`'s report text.
    pub fn report(&self, i: usize) -> Result<String> {
        read_report(&self.item(i)?.report)
    }

    /// Item `i`'s FINDINGS / IMPRESSION sentences without decoding its image (e.g. to train a
    /// vocabulary); an error when the report has none.
    pub fn sentences(&self, i: usize) -> Result<Vec<String>> {
        let path = &self.item(i)?.report;
        report_sentences(&read_report(path)?, path.display())
    }
}

impl Dataset for MimicDataset {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, i: usize) -> Result<(Image, Vec<String>)> {
        let sentences = self.sentences(i)?;
        Ok((load_image(&self.items[i].image)?, sentences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::{ImageBuffer, Luma};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder of this test's own under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "convirt-manifest-{}-{n}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The shared fixtures folder: `CONVIRT_FIXTURES`, else `../shared/fixtures` beside the
    /// crate.
    fn fixture(name: &str) -> PathBuf {
        let dir = std::env::var_os("CONVIRT_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
        let path = dir.join(name);
        assert!(
            path.exists(),
            "{} is missing: it comes from the shared fixtures folder (../shared/fixtures next to \
             the crate, or CONVIRT_FIXTURES)",
            path.display()
        );
        path
    }

    /// A small grey PNG of `w` x `h` at `path` (folders made as needed).
    fn png(path: &Path, w: u32, h: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        ImageBuffer::<Luma<u8>, Vec<u8>>::from_fn(w, h, |x, y| Luma([(x * 7 + y * 3) as u8]))
            .save(path)
            .unwrap();
    }

    /// A small grey JPEG of `w` x `h` at `path` (folders made as needed).
    fn jpeg(path: &Path, w: u32, h: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = ImageBuffer::<Luma<u8>, Vec<u8>>::from_fn(w, h, |x, y| Luma([(x + y) as u8]));
        let mut file = std::fs::File::create(path).unwrap();
        JpegEncoder::new_with_quality(&mut file, 90)
            .encode_image(&img)
            .unwrap();
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    fn same_labels(got: &[f32], want: &[f32]) -> bool {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
    }

    const NAN: f32 = f32::NAN;

    #[test]
    fn csv_manifest_with_texts_files_splits_and_labels() {
        let dir = scratch("csv");
        png(&dir.join("img/a.png"), 8, 6);
        png(&dir.join("img/b.png"), 5, 5);
        png(&dir.join("img/c.png"), 4, 4);
        write(
            &dir.join("reports/b.txt"),
            "INDICATION: Cough.\nFINDINGS: Small left effusion.\nIMPRESSION: Effusion.",
        );
        let radiograph = fixture("chest_xray_rg1.png");
        // Row 2's report is quoted over two lines: row 3 starts on line 4.
        let csv = format!(
            "image,report,report_path,split,Cardiomegaly,Edema\n\
             img/a.png,\"FINDINGS: Heart is enlarged, lungs clear.\",,train,1,0\n\
             img/b.png,,reports/b.txt,VAL,-1,\n\
             img/c.png,\"FINDINGS: No effusion.\nIMPRESSION: Normal chest.\",,test,,1.0\n\
             {},The lungs are clear.,,validate,0,-1\n\
             img/a.png,No acute process.,,train,0,0\n",
            radiograph.display()
        );
        let path = dir.join("manifest.csv");
        write(&path, &csv);
        let m = ManifestDataset::open(&path).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m.label_names(), ["Cardiomegaly", "Edema"]);
        assert!(same_labels(m.labels(0), &[1.0, 0.0]));
        assert!(same_labels(m.labels(1), &[-1.0, NAN]));
        assert!(same_labels(m.labels(2), &[NAN, 1.0]));
        assert!(same_labels(m.labels(3), &[0.0, -1.0]));
        assert_eq!(m.path(0), dir.join("img/a.png"));
        assert_eq!(m.path(3), radiograph, "an absolute path stays as it is");
        assert_eq!((m.line(0), m.line(1), m.line(2), m.line(3)), (2, 3, 4, 6));
        assert_eq!(m.item_split(1), Some(Split::Validate));
        assert!(m.has_splits());

        // Reports: text, a file (read by get), sections picked.
        let (image, sentences) = m.get(0).unwrap();
        assert_eq!((image.width, image.height, image.channels), (8, 6, 1));
        assert_eq!(sentences, ["Heart is enlarged, lungs clear."]);
        assert_eq!(m.get(1).unwrap().1, ["Small left effusion.", "Effusion."]);
        assert_eq!(m.sentences(2).unwrap(), ["No effusion.", "Normal chest."]);
        assert!(m.report(1).unwrap().starts_with("INDICATION"));
        let (image, _) = m.get(3).unwrap();
        assert_eq!(image.width.max(image.height), 1024, "the real radiograph");

        // Splits: "val" and "validate" are one; unknown names select nothing.
        let train = m.split("train");
        assert_eq!(train.len(), 2);
        assert!(train.labels(1).iter().all(|&v| v == 0.0));
        let val = m.split("val");
        assert_eq!(val.len(), 2);
        assert_eq!((val.path(0), val.path(1)), (m.path(1), m.path(3)));
        assert_eq!(m.split("validate").len(), 2);
        assert_eq!(m.split("test").len(), 1);
        assert_eq!(m.split("dev").len(), 0);
        assert_eq!(val.label_names(), m.label_names());
        assert_eq!(m.subset(3..5).path(1), m.path(4));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jsonl_manifest() {
        let dir = scratch("jsonl");
        png(&dir.join("a.png"), 6, 6);
        let abs = dir.join("elsewhere/b.png");
        png(&abs, 3, 7);
        write(&dir.join("r/a.txt"), "IMPRESSION: No pneumothorax.");
        let lines = [
            r#"{"Path": "a.png", "report_path": "r/a.txt", "Edema": 1}"#.to_string(),
            String::new(),
            format!(
                r#"{{"image": {}, "text": "Lungs are clear. No effusion.", "Edema": null, "Atelectasis": -1}}"#,
                serde_json::to_string(&abs.display().to_string()).unwrap()
            ),
            r#"{"path": "a.png", "report": "FINDINGS: Mild edema.", "Atelectasis": "0", "Edema": ""}"#
                .to_string(),
        ];
        let path = dir.join("pairs.jsonl");
        write(&path, &lines.join("\n"));
        let m = ManifestDataset::open(&path).unwrap();
        assert_eq!(m.len(), 3);
        assert!(!m.has_splits(), "no split column: the caller picks");
        let mut names = m.label_names().to_vec();
        names.sort();
        assert_eq!(names, ["Atelectasis", "Edema"]);
        let label = |i: usize, name: &str| {
            let k = m.label_names().iter().position(|n| n == name).unwrap();
            m.labels(i)[k]
        };
        assert_eq!(label(0, "Edema"), 1.0);
        assert!(
            label(0, "Atelectasis").is_nan(),
            "first seen on a later line"
        );
        assert!(label(1, "Edema").is_nan(), "null");
        assert_eq!(label(1, "Atelectasis"), -1.0);
        assert_eq!(label(2, "Atelectasis"), 0.0);
        assert!(label(2, "Edema").is_nan(), "blank");
        assert_eq!(m.line(1), 3, "blank lines count");
        assert_eq!(m.path(1), abs);
        assert_eq!(m.get(0).unwrap().1, ["No pneumothorax."]);
        let (image, sentences) = m.get(1).unwrap();
        assert_eq!((image.width, image.height), (3, 7));
        assert_eq!(sentences, ["Lungs are clear.", "No effusion."]);
        assert_eq!(m.get(2).unwrap().1, ["Mild edema."]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_rows_are_errors_naming_the_file_and_line() {
        let dir = scratch("bad");
        let cases: [(&str, &str, &str, &str); 10] = [
            (
                "no_report.csv",
                "image,report,Edema\na.png,Clear.,1\nb.png,,0\n",
                "line 3",
                "no report",
            ),
            (
                "no_report_column.csv",
                "image,Edema\na.png,1\n",
                "line 2",
                "no report",
            ),
            (
                "blank_report.jsonl",
                "{\"image\": \"a.png\", \"report\": \"Clear.\"}\n{\"image\": \"b.png\", \"report\": \"  \"}\n",
                "line 2",
                "no report",
            ),
            (
                "no_image.csv",
                "image,report\n,Clear.\n",
                "line 2",
                "no image",
            ),
            (
                "bad_label.csv",
                "image,report,Sex\na.png,Clear.,Female\n",
                "line 2",
                "label `Sex`",
            ),
            (
                "short_row.csv",
                "image,report,Edema\na.png,Clear.,1\nb.png,Clear.\n",
                "line 3",
                "2 fields where the header names 3 columns",
            ),
            (
                "bad_split.csv",
                "image,report,split\na.png,Clear.,dev\n",
                "line 2",
                "split \"dev\"",
            ),
            (
                "bad_json.jsonl",
                "{\"image\": \"a.png\", \"report\": \"Clear.\"}\n{\"image\": \"b.png\",\n",
                "line 2",
                "not valid JSON",
            ),
            (
                "both.jsonl",
                "{\"image\": \"a.png\", \"report\": \"Clear.\", \"report_path\": \"r.txt\"}\n",
                "line 1",
                "keep one",
            ),
            (
                "array.json",
                "[\n{\"image\": \"a.png\", \"report\": \"Clear.\"}\n]\n",
                "line 1",
                "JSON array",
            ),
        ];
        for (name, text, line, why) in cases {
            let path = dir.join(name);
            write(&path, text);
            let e = message(ManifestDataset::open(&path).unwrap_err());
            assert!(e.contains(name), "{name}: the message names the file: {e}");
            assert!(e.contains(line), "{name}: the message names {line}: {e}");
            assert!(e.contains(why), "{name}: the message says {why:?}: {e}");
        }
        for (name, text) in [
            ("empty.csv", "image,report\n"),
            ("nothing.jsonl", "\n\n"),
            ("manifest.txt", "image,report\na.png,Clear.\n"),
        ] {
            let path = dir.join(name);
            write(&path, text);
            let e = message(ManifestDataset::open(&path).unwrap_err());
            assert!(e.contains(name), "{name}: {e}");
        }
        let missing = dir.join("absent.csv");
        assert!(message(ManifestDataset::open(&missing).unwrap_err()).contains("absent.csv"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_are_errors_from_get_naming_them() {
        let dir = scratch("missing");
        png(&dir.join("here.png"), 4, 4);
        // The last report has no sentence: nothing to train on.
        write(
            &dir.join("m.csv"),
            "image,report,report_path\n\
             gone.png,FINDINGS: Clear.,\n\
             here.png,,lost.txt\n\
             here.png,...,\n",
        );
        let m = ManifestDataset::open(&dir.join("m.csv")).unwrap();
        assert_eq!(m.len(), 3, "files are only read by get");
        let e = message(m.get(0).unwrap_err());
        assert!(e.contains("gone.png"), "{e}");
        let e = message(m.get(1).unwrap_err());
        assert!(e.contains("lost.txt"), "{e}");
        let e = message(m.get(2).unwrap_err());
        assert!(
            e.contains("m.csv line 4") && e.contains("no sentence"),
            "{e}"
        );
        assert!(m.get(3).is_err(), "past the end");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A tiny MIMIC-CXR-JPG tree: two patients, three studies with reports (one of them with two
    /// images) and one without, plus the clutter a web download leaves.
    fn mimic_tree(images: &Path, reports: &Path) {
        let files = images.join("files");
        let rfiles = reports.join("files");
        jpeg(&files.join("p10/p10000001/s50000001/bbb.jpg"), 6, 5);
        jpeg(&files.join("p10/p10000001/s50000001/aaa.jpg"), 5, 6);
        jpeg(&files.join("p10/p10000001/s50000002/ccc.jpg"), 4, 4);
        jpeg(&files.join("p11/p11000002/s50000009/ddd.jpg"), 7, 3);
        jpeg(&files.join("p11/p11000002/s50000003/eee.jpg"), 3, 3);
        write(&files.join("index.html"), "<html></html>");
        write(&files.join("p10/p10000001/s50000001/index.html"), "<html>");
        std::fs::create_dir_all(files.join("p11/p11000002/s50000004")).unwrap(); // no image
        write(
            &rfiles.join("p10/p10000001/s50000001.txt"),
            "FINAL REPORT\nFINDINGS: Small right effusion.\nIMPRESSION: Effusion.\n",
        );
        write(
            &rfiles.join("p10/p10000001/s50000002.txt"),
            "IMPRESSION: Resolved effusion.\n",
        );
        write(
            &rfiles.join("p11/p11000002/s50000003.txt"),
            "FINDINGS: Heart size is normal.\n",
        );
        // s50000009 has no report.
    }

    #[test]
    fn mimic_tree_pairs_images_with_their_study_report() {
        let root = scratch("mimic");
        mimic_tree(&root, &root);
        let check = |m: &MimicDataset| {
            assert_eq!(m.len(), 4);
            assert_eq!(m.skipped(), 1, "the study without a report");
            let names: Vec<String> = (0..m.len())
                .map(|i| {
                    m.path(i)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            assert_eq!(names, ["aaa.jpg", "bbb.jpg", "ccc.jpg", "eee.jpg"]);
            assert!(m.report_path(1).ends_with("p10/p10000001/s50000001.txt"));
            let (image, sentences) = m.get(0).unwrap();
            assert_eq!((image.width, image.height, image.channels), (5, 6, 1));
            assert_eq!(sentences, ["Small right effusion.", "Effusion."]);
            assert_eq!(m.get(1).unwrap().1, sentences, "one study, one report");
            assert_eq!(m.get(2).unwrap().1, ["Resolved effusion."]);
            assert_eq!(m.sentences(3).unwrap(), ["Heart size is normal."]);
            assert!(m.get(4).is_err());
        };
        let whole = MimicDataset::open(&root).unwrap();
        check(&whole);
        check(&MimicDataset::open(&root.join("files")).unwrap());
        assert_eq!(whole.subset(2..4).path(0), whole.path(2));

        // Reports elsewhere, given as their files folder.
        let (images, reports) = (scratch("mimic-images"), scratch("mimic-reports"));
        mimic_tree(&images, &reports);
        check(&MimicDataset::open_with_reports(&images, &reports.join("files")).unwrap());
        let e = message(MimicDataset::open(&images).unwrap_err());

        assert!(e.contains("none of its 4 studies has a report"), "{e}");

        // An image that cannot be decoded is an error from get naming it.
        write(
            &root.join("files/p10/p10000001/s50000002/ccc.jpg"),
            "not a jpeg",
        );
        let e = message(MimicDataset::open(&root).unwrap().get(2).unwrap_err());
        assert!(e.contains("ccc.jpg"), "{e}");

        // No images at all: an error naming the root.
        let empty = scratch("mimic-empty");
        std::fs::create_dir_all(empty.join("files/p10")).unwrap();
        let e = message(MimicDataset::open(&empty).unwrap_err());
        assert!(
            e.contains(&empty.display().to_string()) && e.contains("no images"),
            "{e}"
        );
        let e = message(MimicDataset::open(&empty.join("absent")).unwrap_err());
        assert!(e.contains("absent") && e.contains("not a folder"), "{e}");
        for dir in [root, images, reports, empty] {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
