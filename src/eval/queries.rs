//! Readers for the evaluation's CSV files: the retrieval query and candidate sets (CheXpert
//! 8x200 as published with the paper, and a plain generic form) and CheXpert-style label
//! tables for the linear probes. Each returns a plain struct of paths, texts and category or
//! label indices; every refusal is an [`Error::Invalid`] naming the file and the line.
//!
//! The forms read (header names are matched case-insensitively, surrounding spaces ignored,
//! and a UTF-8 byte-order mark is skipped):
//!
//! - one-hot images ([`read_onehot_images`]): a `Path` column and one column per category
//!   holding 1 (or 1.0) on the item's category, as in the 8x200 `candidate.csv`, whose other
//!   columns (`Sex`, `Age`, the six findings outside the eight) are ignored;
//! - long-form images ([`read_images`]): `Path` and `Category` (or `Variable`, as in the
//!   8x200 image `query.csv`);
//! - texts ([`read_texts`]): `Category` (or `Variable`) and `Text`, as in the 8x200 text
//!   `query.csv`;
//! - labels ([`read_labels`]): `Path` and label columns holding 1, 0, -1 (uncertain) or
//!   nothing, as in CheXpert's `train.csv` and `valid.csv`.
//!
//! Image paths are joined onto a root directory (an absolute path in the file stays as it is);
//! whether the images exist is left to the loader, which skips and counts unreadable ones.

use crate::error::{Error, Result};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The eight categories of the CheXpert 8x200 retrieval sets, in the paper's order.
pub const CHEXPERT_8X200: [&str; 8] = [
    "Atelectasis",
    "Cardiomegaly",
    "Edema",
    "Fracture",
    "No Finding",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
];

/// The five CheXpert findings the paper's linear probe is scored on (mean AUC).
pub const CHEXPERT_COMPETITION: [&str; 5] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
];

/// The non-label columns of CheXpert's label CSVs besides `Path`, which [`read_labels`] leaves
/// out when it is not told which label columns to read.
pub const CHEXPERT_METADATA: [&str; 4] = ["Sex", "Age", "Frontal/Lateral", "AP/PA"];

/// One labelled image of a retrieval set: a query or a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageQuery {
    /// The image file, already joined onto the root directory.
    pub path: PathBuf,
    /// Index into the set's `categories`.
    pub category: usize,
}

/// One text query of a retrieval set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    /// The sentence, surrounding spaces removed.
    pub text: String,
    /// Index into the set's `categories`.
    pub category: usize,
}

/// Images with their categories, and the names those indices refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    pub categories: Vec<String>,
    pub items: Vec<ImageQuery>,
}

/// Text queries with their categories, and the names those indices refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSet {
    pub categories: Vec<String>,
    pub items: Vec<TextQuery>,
}

/// What to make of an uncertain label (-1) in a CheXpert label CSV: the CheXpert paper's
/// "U-Ignore", "U-Ones" and "U-Zeros" policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncertain {
    /// NaN: leave the item out of this finding's loss and AUC (see
    /// [`masked_auc`](super::metrics::masked_auc)).
    Ignore,
    /// 1: count it as positive.
    Positive,
    /// 0: count it as negative.
    Negative,
}

/// A multi-label table: one row of `labels` per image, one column per name.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTable {
    /// The images, joined onto the root directory.
    pub paths: Vec<PathBuf>,
    /// The label columns, in the order of `labels`' columns.
    pub names: Vec<String>,
    /// 1 positive, 0 negative, NaN unknown (only under [`Uncertain::Ignore`]).
    pub labels: Vec<Vec<f32>>,
}

/// Reads a one-hot image CSV: `Path` plus a column per category holding 1 (or 1.0) on the
/// item's category and 0, -1 or nothing elsewhere. `categories` names the category columns,
/// in the order the indices will follow (e.g. [`CHEXPERT_8X200`]), and any other column is
/// ignored; empty, every column but `Path` is a category, in header order. A row with no 1 or
/// with more than one among the categories is an error naming the file and line.
pub fn read_onehot_images<S: AsRef<str>>(
    csv: &Path,
    root: &Path,
    categories: &[S],
) -> Result<ImageSet> {
    const OP: &str = "read_onehot_images";
    let mut table = Table::open(OP, csv)?;
    let path_col = table.column(&["path"])?;
    let (names, cols): (Vec<String>, Vec<usize>) = if categories.is_empty() {
        table
            .header
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != path_col)
            .map(|(i, h)| (h.to_string(), i))
            .unzip()
    } else {
        let mut names = Vec::new();
        let mut cols = Vec::new();
        for c in categories {
            let c = c.as_ref().trim();
            let col = table.column(&[c])?;
            if cols.contains(&col) {
                return Err(Error::Invalid {
                    op: OP,
                    why: format!("category {c:?} is asked for twice"),
                });
            }
            cols.push(col);
            names.push(c.to_string());
        }
        (names, cols)
    };
    if names.is_empty() {
        return Err(table.fail(
            table.header_line,
            "there are no category columns besides Path".into(),
        ));
    }
    let mut items = Vec::new();
    while let Some((line, record)) = table.next()? {
        let path = table.path_cell(&record, path_col, line, root)?;
        let mut hits = Vec::new();
        for (k, &col) in cols.iter().enumerate() {
            let cell = record.get(col).unwrap_or("").trim();
            let value = if cell.is_empty() {
                0.0
            } else {
                cell.parse::<f64>().map_err(|_| {
                    table.fail(
                        line,
                        format!("column {:?} holds {cell:?}, not a number", names[k]),
                    )
                })?
            };
            if value == 1.0 {
                hits.push(k);
            } else if value != 0.0 && value != -1.0 {
                return Err(table.fail(
                    line,
                    format!(
                        "column {:?} holds {cell:?}; expected 1, 0, -1 or nothing",
                        names[k]
                    ),
                ));
            }
        }
        match hits.as_slice() {
            [k] => items.push(ImageQuery { path, category: *k }),
            [] => {
                return Err(table.fail(
                    line,
                    format!("no category holds 1 (categories: {})", names.join(", ")),
                ))
            }
            many => {
                let which: Vec<&str> = many.iter().map(|&k| names[k].as_str()).collect();
                return Err(table.fail(
                    line,
                    format!(
                        "more than one category holds 1 ({}); each image needs exactly one",
                        which.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(ImageSet {
        categories: names,
        items,
    })
}

/// Reads a long-form image CSV: a `Path` column and a `Category` (or `Variable`) column naming
/// the image's category. With `categories` non-empty, every name must be one of them (matched
/// case-insensitively) and the indices refer to it, which is how queries line up with the
/// candidates' categories; empty, the categories are collected in order of first appearance.
pub fn read_images<S: AsRef<str>>(csv: &Path, root: &Path, categories: &[S]) -> Result<ImageSet> {
    const OP: &str = "read_images";
    let mut table = Table::open(OP, csv)?;
    let path_col = table.column(&["path"])?;
    let cat_col = table.column(&["category", "variable"])?;
    let mut names = Categories::new(categories);
    let mut items = Vec::new();
    while let Some((line, record)) = table.next()? {
        let path = table.path_cell(&record, path_col, line, root)?;
        let category = names.index(&table, line, record.get(cat_col).unwrap_or(""))?;
        items.push(ImageQuery { path, category });
    }
    Ok(ImageSet {
        categories: names.names,
        items,
    })
}

/// Reads a text-query CSV: a `Category` (or `Variable`) column and a `Text` column. The
/// categories work as in [`read_images`]: pass the candidates' names to get indices into them.
/// An empty sentence is an error, since it would match every image alike.
pub fn read_texts<S: AsRef<str>>(csv: &Path, categories: &[S]) -> Result<TextSet> {
    const OP: &str = "read_texts";
    let mut table = Table::open(OP, csv)?;
    let cat_col = table.column(&["category", "variable"])?;
    let text_col = table.column(&["text"])?;
    let mut names = Categories::new(categories);
    let mut items = Vec::new();
    while let Some((line, record)) = table.next()? {
        let text = record.get(text_col).unwrap_or("").trim();
        if text.is_empty() {
            return Err(table.fail(line, "the text is empty".into()));
        }
        let category = names.index(&table, line, record.get(cat_col).unwrap_or(""))?;
        items.push(TextQuery {
            text: text.to_string(),
            category,
        });
    }
    Ok(TextSet {
        categories: names.names,
        items,
    })
}

/// Reads a CheXpert-style label CSV: `Path` and label columns holding 1, 0, -1 (uncertain) or
/// nothing (1.0, 0.0 and -1.0 too). `columns` picks the label columns and their order (e.g.
/// [`CHEXPERT_COMPETITION`]); empty, every column but `Path` and [`CHEXPERT_METADATA`] is read.
///
/// A blank cell becomes 0: in CheXpert a blank means the report did not mention the finding,
/// and the usual practice (and this crate's) is to treat an unmentioned finding as absent. A
/// -1 becomes what `uncertain` says. Any other value is an error naming file, line and column.
pub fn read_labels<S: AsRef<str>>(
    csv: &Path,
    root: &Path,
    columns: &[S],
    uncertain: Uncertain,
) -> Result<LabelTable> {
    const OP: &str = "read_labels";
    let mut table = Table::open(OP, csv)?;
    let path_col = table.column(&["path"])?;
    let (names, cols): (Vec<String>, Vec<usize>) = if columns.is_empty() {
        table
            .header
            .iter()
            .enumerate()
            .filter(|&(i, h)| {
                i != path_col && !CHEXPERT_METADATA.iter().any(|m| m.eq_ignore_ascii_case(h))
            })
            .map(|(i, h)| (h.to_string(), i))
            .unzip()
    } else {
        let mut names = Vec::new();
        let mut cols = Vec::new();
        for c in columns {
            let c = c.as_ref().trim();
            cols.push(table.column(&[c])?);
            names.push(c.to_string());
        }
        (names, cols)
    };
    if names.is_empty() {
        return Err(table.fail(
            table.header_line,
            "there are no label columns besides Path".into(),
        ));
    }
    let uncertain_value = match uncertain {
        Uncertain::Ignore => f32::NAN,
        Uncertain::Positive => 1.0,
        Uncertain::Negative => 0.0,
    };
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    while let Some((line, record)) = table.next()? {
        paths.push(table.path_cell(&record, path_col, line, root)?);
        let mut row = Vec::with_capacity(cols.len());
        for (k, &col) in cols.iter().enumerate() {
            let cell = record.get(col).unwrap_or("").trim();
            let value = match cell {
                "" => 0.0,
                "1" | "1.0" => 1.0,
                "0" | "0.0" => 0.0,
                "-1" | "-1.0" => uncertain_value,
                other => {
                    return Err(table.fail(
                        line,
                        format!(
                            "column {:?} holds {other:?}; expected 1, 0, -1 or nothing",
                            names[k]
                        ),
                    ))
                }
            };
            row.push(value);
        }
        labels.push(row);
    }
    Ok(LabelTable {
        paths,
        names,
        labels,
    })
}

/// An open CSV file with its header, and the file's name for every message. The file is read
/// whole (evaluation CSVs are small) so that line numbers can be checked against its bytes.
struct Table {
    op: &'static str,
    file: PathBuf,
    header: Vec<String>,
    /// The line the header is on (1 unless blank lines come first).
    header_line: u64,
    content: Arc<[u8]>,
    reader: csv::Reader<Cursor<Arc<[u8]>>>,
}

impl Table {
    /// Opens `file` and reads its header (surrounding spaces trimmed).
    fn open(op: &'static str, file: &Path) -> Result<Table> {
        let content: Arc<[u8]> = std::fs::read(file)
            .map_err(|e| Error::Invalid {
                op,
                why: format!("{}: cannot open it: {e}", file.display()),
            })?
            .into();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .trim(csv::Trim::All)
            .from_reader(Cursor::new(content.clone()));
        let header = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(csv_error(op, file, &content, e)),
        };
        let header_line = header.position().map_or(1, |p| true_line(&content, p));
        let header: Vec<String> = header.iter().map(|s| s.trim().to_string()).collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(fail(
                op,
                file,
                header_line,
                "the file is empty (no header line)".into(),
            ));
        }
        Ok(Table {
            op,
            file: file.to_path_buf(),
            header,
            header_line,
            content,
            reader,
        })
    }

    /// The index of the header column named by one of `names` (case-insensitively); an error
    /// naming the file, the names accepted and the header found when there is none, or when
    /// more than one column matches.
    fn column(&self, names: &[&str]) -> Result<usize> {
        let found: Vec<usize> = self
            .header
            .iter()
            .enumerate()
            .filter(|(_, h)| names.iter().any(|n| n.eq_ignore_ascii_case(h)))
            .map(|(i, _)| i)
            .collect();
        let wanted = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(" or ");
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(self.fail(
                self.header_line,
                format!(
                    "no column {wanted} in the header ({})",
                    self.header.join(", ")
                ),
            )),
            _ => Err(self.fail(
                self.header_line,
                format!("more than one column is {wanted}"),
            )),
        }
    }

    /// The next record and its line (1-based, the header being line 1), or None at the end.
    fn next(&mut self) -> Result<Option<(u64, csv::StringRecord)>> {
        let mut record = csv::StringRecord::new();
        match self.reader.read_record(&mut record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = record.position().map_or(0, |p| true_line(&self.content, p));
                Ok(Some((line, record)))
            }
            Err(e) => Err(self.csv_error(e)),
        }
    }

    /// The path in column `col`, joined onto `root`; an empty one is an error.
    fn path_cell(
        &self,
        record: &csv::StringRecord,
        col: usize,
        line: u64,
        root: &Path,
    ) -> Result<PathBuf> {
        let cell = record.get(col).unwrap_or("").trim();
        if cell.is_empty() {
            return Err(self.fail(line, "the image path is empty".into()));
        }
        Ok(root.join(cell))
    }

    /// An error at `line` of this file.
    fn fail(&self, line: u64, why: String) -> Error {
        fail(self.op, &self.file, line, why)
    }

    fn csv_error(&self, e: csv::Error) -> Error {
        csv_error(self.op, &self.file, &self.content, e)
    }
}

/// An error at `line` of `file`.
fn fail(op: &'static str, file: &Path, line: u64, why: String) -> Error {
    Error::Invalid {
        op,
        why: format!("{} line {line}: {why}", file.display()),
    }
}

/// A parse error from the csv crate (unequal row lengths, invalid UTF-8...), at its line.
fn csv_error(op: &'static str, file: &Path, content: &[u8], e: csv::Error) -> Error {
    match e.position() {
        Some(p) => fail(op, file, true_line(content, p), e.to_string()),
        None => Error::Invalid {
            op,
            why: format!("{}: {e}", file.display()),
        },
    }
}

/// The line a record really starts on. The csv crate places a record where the previous one
/// ended, before any blank lines it skipped, so a record after a blank line would be reported
/// one line early; stepping over the line breaks from that byte on corrects it.
fn true_line(content: &[u8], position: &csv::Position) -> u64 {
    let mut line = position.line();
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    for &b in content.iter().skip(start) {
        match b {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
    }
    line
}

/// Category names and the index of each: either fixed in advance or collected as they come.
struct Categories {
    names: Vec<String>,
    fixed: bool,
}

impl Categories {
    fn new<S: AsRef<str>>(known: &[S]) -> Categories {
        Categories {
            names: known
                .iter()
                .map(|s| s.as_ref().trim().to_string())
                .collect(),
            fixed: !known.is_empty(),
        }
    }

    /// The index of `name` (case-insensitively); a new one when collecting, an error naming
    /// the file, line and the known names when fixed.
    fn index(&mut self, table: &Table, line: u64, name: &str) -> Result<usize> {
        let name = name.trim();
        if name.is_empty() {
            return Err(table.fail(line, "the category is empty".into()));
        }
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            return Ok(i);
        }
        if self.fixed {
            return Err(table.fail(
                line,
                format!(
                    "unknown category {name:?} (known: {})",
                    self.names.join(", ")
                ),
            ));
        }
        self.names.push(name.to_string());
        Ok(self.names.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fresh directory of its own for each test, so tests running in parallel (and other
    /// processes) never share files; removed when the test ends.
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "convirt-eval-queries-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write a test file");
        path
    }

    /// The message of an error, which must name the file and the line.
    fn message(e: Error, file: &Path, line: u64) -> String {
        let m = e.to_string();
        assert!(
            m.contains(&file.display().to_string()),
            "{m:?} does not name {}",
            file.display()
        );
        assert!(
            m.contains(&format!("line {line}")),
            "{m:?} is not at line {line}"
        );
        m
    }

    const NONE: [&str; 0] = [];

    #[test]
    fn onehot_candidates_like_8x200() {
        let dir = temp_dir("onehot");
        // The 8x200 candidate.csv's shape: metadata columns, all 14 findings, 1.0 / 0.0.
        let csv = write(
            &dir,
            "candidate.csv",
            "\u{feff}Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,\
             Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,\
             Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices\n\
             a/1.jpg,Male,86,Frontal,AP,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n\
             a/2.jpg,Female,40,Frontal,PA,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,1.0\n\
             b/3.jpg,Male,20,Frontal,AP,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n",
        );
        let root = Path::new("/data/chexpert");
        let set = read_onehot_images(&csv, root, &CHEXPERT_8X200).expect("a valid file");
        assert_eq!(set.categories, CHEXPERT_8X200.to_vec());
        let got: Vec<(PathBuf, &str)> = set
            .items
            .iter()
            .map(|q| (q.path.clone(), set.categories[q.category].as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (root.join("a/1.jpg"), "Fracture"),
                (root.join("a/2.jpg"), "Atelectasis"),
                (root.join("b/3.jpg"), "No Finding"),
            ]
        );

        // Every column but Path a category: a small generic file, 1 and blanks.
        let csv = write(&dir, "generic.csv", "path,cat,dog\nx.png,1,\ny.png,0,1\n");
        let set = read_onehot_images(&csv, &dir, &NONE).expect("a valid file");
        assert_eq!(set.categories, vec!["cat", "dog"]);
        assert_eq!(
            set.items,
            vec![
                ImageQuery {
                    path: dir.join("x.png"),
                    category: 0
                },
                ImageQuery {
                    path: dir.join("y.png"),
                    category: 1
                },
            ]
        );
    }

    #[test]
    fn onehot_errors_name_file_and_line() {
        let dir = temp_dir("onehot-errors");
        let two = write(&dir, "two.csv", "Path,A,B\nx.png,1,0\ny.png,1,1.0\n");
        let m = message(read_onehot_images(&two, &dir, &NONE).unwrap_err(), &two, 3);
        assert!(m.contains("more than one") && m.contains("A, B"), "{m}");

        let zero = write(&dir, "zero.csv", "Path,A,B\nx.png,0,-1\n");
        let m = message(
            read_onehot_images(&zero, &dir, &NONE).unwrap_err(),
            &zero,
            2,
        );
        assert!(m.contains("no category holds 1"), "{m}");

        let bad = write(&dir, "bad.csv", "Path,A,B\nx.png,1,0\n\ny.png,yes,0\n");
        let m = message(read_onehot_images(&bad, &dir, &NONE).unwrap_err(), &bad, 4);
        assert!(m.contains("\"yes\""), "{m}");

        let missing = write(&dir, "missing.csv", "Path,A,B\nx.png,1,0\n");
        let twice = read_onehot_images(&missing, &dir, &["A", "a"]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let m = message(
            read_onehot_images(&missing, &dir, &["A", "Edema"]).unwrap_err(),
            &missing,
            1,
        );
        assert!(m.contains("Edema"), "{m}");

        let ragged = write(&dir, "ragged.csv", "Path,A,B\nx.png,1,0\ny.png,1\n");
        message(
            read_onehot_images(&ragged, &dir, &NONE).unwrap_err(),
            &ragged,
            3,
        );

        let no_path = write(&dir, "no_path.csv", "File,A\nx.png,1\n");
        let m = message(
            read_onehot_images(&no_path, &dir, &NONE).unwrap_err(),
            &no_path,
            1,
        );
        assert!(m.contains("\"path\"") && m.contains("File, A"), "{m}");

        let empty = write(&dir, "empty.csv", "");
        message(
            read_onehot_images(&empty, &dir, &NONE).unwrap_err(),
            &empty,
            1,
        );

        let absent = dir.join("absent.csv");
        let m = read_onehot_images(&absent, &dir, &NONE)
            .unwrap_err()
            .to_string();
        assert!(m.contains("absent.csv") && m.contains("cannot open"), "{m}");
    }

    #[test]
    fn line_numbers_survive_blank_lines_and_crlf() {
        let dir = temp_dir("lines");
        // Record "bad" is on line 6: blank lines (LF and CRLF) before the header and between rows.
        let csv = write(
            &dir,
            "crlf.csv",
            "\r\n\nPath,A\r\nx.png,1\r\n\r\ny.png,bad\r\n",
        );
        let m = message(read_onehot_images(&csv, &dir, &NONE).unwrap_err(), &csv, 6);
        assert!(m.contains("\"bad\""), "{m}");
        // The header's own line, for a missing column.
        let m = message(read_onehot_images(&csv, &dir, &["B"]).unwrap_err(), &csv, 3);
        assert!(m.contains("\"B\""), "{m}");
        // A ragged row after a blank line.
        let csv = write(&dir, "ragged.csv", "Path,A\nx.png,1\n\n\ny.png\n");
        message(read_onehot_images(&csv, &dir, &NONE).unwrap_err(), &csv, 5);
        // Not UTF-8.
        let csv = dir.join("latin1.csv");
        fs::write(&csv, b"category,text\nbig,c\xe6ur\n").expect("write a test file");
        message(read_texts(&csv, &NONE).unwrap_err(), &csv, 2);
    }

    #[test]
    fn long_form_images() {
        let dir = temp_dir("images");
        // The 8x200 image query.csv: Variable before Path.
        let csv = write(
            &dir,
            "query.csv",
            "Variable,Path\nAtelectasis,p1/s1/v1.jpg\nEdema,p2/s1/v1.jpg\natelectasis,p3.jpg\n",
        );
        let set = read_images(&csv, &dir, &CHEXPERT_8X200).expect("a valid file");
        assert_eq!(set.categories, CHEXPERT_8X200.to_vec());
        let cats: Vec<usize> = set.items.iter().map(|q| q.category).collect();
        assert_eq!(cats, vec![0, 2, 0]);
        assert_eq!(set.items[1].path, dir.join("p2/s1/v1.jpg"));

        // Generic form, categories collected in order of first appearance.
        let csv = write(
            &dir,
            "generic.csv",
            "path, category\na.png, dog\nb.png,cat\nc.png,Dog\n",
        );
        let set = read_images(&csv, &dir, &NONE).expect("a valid file");
        assert_eq!(set.categories, vec!["dog", "cat"]);
        let cats: Vec<usize> = set.items.iter().map(|q| q.category).collect();
        assert_eq!(cats, vec![0, 1, 0]);

        let unknown = write(
            &dir,
            "unknown.csv",
            "path,category\na.png,Edema\nb.png,Nodule\n",
        );
        let m = message(
            read_images(&unknown, &dir, &CHEXPERT_8X200).unwrap_err(),
            &unknown,
            3,
        );
        assert!(
            m.contains("\"Nodule\"") && m.contains("Pneumothorax"),
            "{m}"
        );

        let blank = write(&dir, "blank.csv", "path,category\n,Edema\n");
        message(read_images(&blank, &dir, &NONE).unwrap_err(), &blank, 2);
        let blank = write(&dir, "blank_cat.csv", "path,category\na.png,\n");
        message(read_images(&blank, &dir, &NONE).unwrap_err(), &blank, 2);
    }

    #[test]
    fn text_queries() {
        let dir = temp_dir("texts");
        let csv = write(
            &dir,
            "query.csv",
            "Variable,Text\nPneumothorax,An apical pneumothorax is present.\n\
             Pleural Effusion,\"Blunting of the costophrenic angles, bilaterally.\"\n",
        );
        let set = read_texts(&csv, &CHEXPERT_8X200).expect("a valid file");
        assert_eq!(
            set.items,
            vec![
                TextQuery {
                    text: "An apical pneumothorax is present.".into(),
                    category: 7
                },
                TextQuery {
                    text: "Blunting of the costophrenic angles, bilaterally.".into(),
                    category: 5
                },
            ]
        );

        let csv = write(
            &dir,
            "generic.csv",
            "TEXT,category\nthe heart is big,big\nclear,none\n",
        );
        let set = read_texts(&csv, &NONE).expect("a valid file");
        assert_eq!(set.categories, vec!["big", "none"]);
        assert_eq!(set.items[1].category, 1);

        let empty = write(&dir, "empty_text.csv", "category,text\nbig,heart\nbig,  \n");
        let m = message(read_texts(&empty, &NONE).unwrap_err(), &empty, 3);
        assert!(m.contains("empty"), "{m}");

        let two = write(&dir, "two.csv", "category,variable,text\na,b,c\n");
        let m = message(read_texts(&two, &NONE).unwrap_err(), &two, 1);
        assert!(m.contains("more than one"), "{m}");
    }

    #[test]
    fn chexpert_labels() {
        let dir = temp_dir("labels");
        let csv = write(
            &dir,
            "train.csv",
            "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Atelectasis,Edema\n\
             p1.jpg,Male,60,Frontal,AP,1.0,,0.0\n\
             p2.jpg,Female,70,Frontal,PA,,-1.0,1.0\n\
             p3.jpg,Male,50,Lateral,,,1,-1\n",
        );
        let root = Path::new("root");
        let nan = f32::NAN;
        let read = |u| read_labels(&csv, root, &NONE, u).expect("a valid file");

        let t = read(Uncertain::Ignore);
        assert_eq!(t.names, vec!["No Finding", "Atelectasis", "Edema"]);
        assert_eq!(
            t.paths,
            vec![
                root.join("p1.jpg"),
                root.join("p2.jpg"),
                root.join("p3.jpg")
            ]
        );
        let same = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.len() == y.len()
                        && x.iter()
                            .zip(y)
                            .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
                })
        };
        let want = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, nan, 1.0],
            vec![0.0, 1.0, nan],
        ];
        assert!(same(&t.labels, &want), "{:?}", t.labels);
        let want = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 1.0],
            vec![0.0, 1.0, 1.0],
        ];
        assert!(same(&read(Uncertain::Positive).labels, &want));
        let want = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 0.0, 1.0],
            vec![0.0, 1.0, 0.0],
        ];
        assert!(same(&read(Uncertain::Negative).labels, &want));

        // Chosen columns, in the caller's order, matched case-insensitively.
        let t = read_labels(&csv, root, &["edema", "No Finding"], Uncertain::Ignore)
            .expect("a valid file");
        assert_eq!(t.names, vec!["edema", "No Finding"]);
        assert!(same(
            &t.labels,
            &[vec![0.0, 1.0], vec![1.0, 0.0], vec![nan, 0.0]]
        ));

        let bad = write(&dir, "bad.csv", "Path,Edema\na.jpg,1\nb.jpg,0.5\n");
        let m = message(
            read_labels(&bad, root, &NONE, Uncertain::Ignore).unwrap_err(),
            &bad,
            3,
        );
        assert!(m.contains("\"Edema\"") && m.contains("\"0.5\""), "{m}");

        let missing = write(&dir, "missing.csv", "Path,Edema\na.jpg,1\n");
        let m = message(
            read_labels(&missing, root, &CHEXPERT_COMPETITION, Uncertain::Ignore).unwrap_err(),
            &missing,
            1,
        );
        assert!(m.contains("Atelectasis"), "{m}");

        let only_path = write(&dir, "only_path.csv", "Path,Sex\na.jpg,Male\n");
        message(
            read_labels(&only_path, root, &NONE, Uncertain::Ignore).unwrap_err(),
            &only_path,
            1,
        );
    }
}
