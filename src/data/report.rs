//! Radiology reports as ConVIRT uses them: the sentences of the FINDINGS and IMPRESSION
//! sections, one of which is sampled uniformly each time a pair is drawn.
//!
//! Reports in the MIMIC-CXR style are free text with section headers ("EXAMINATION:",
//! "INDICATION:", "FINDINGS:", "IMPRESSION:", ...) at line starts or after a sentence, hard
//! wrapped at about 80 columns, with numbered lists in the impression. [`sections`] finds the
//! headers, keeps the two sections that describe the image and splits them into sentences with
//! [`split_sentences`], which knows the abbreviations and numbers that reports are full of.

use super::rng::Rng;

/// Headers that open a section we keep (after [`normalise_header`]).
fn is_kept_section(name: &str) -> bool {
    let words: Vec<&str> = name.split(' ').collect();
    words.iter().all(|w| {
        matches!(
            *w,
            "FINDING" | "FINDINGS" | "IMPRESSION" | "IMPRESSIONS" | "AND"
        )
    }) && words.iter().any(|w| *w != "AND")
}

/// Headers of the other sections of a report, whose text is left out.
const OTHER_SECTIONS: [&str; 22] = [
    "ADDENDUM",
    "CLINICAL HISTORY",
    "CLINICAL INDICATION",
    "CLINICAL INFORMATION",
    "COMPARISON",
    "COMPARISONS",
    "CONCLUSION",
    "EXAM",
    "EXAMINATION",
    "FINAL REPORT",
    "HISTORY",
    "INDICATION",
    "INDICATIONS",
    "NOTIFICATION",
    "PROCEDURE",
    "REASON FOR EXAM",
    "REASON FOR EXAMINATION",
    "RECOMMENDATION",
    "RECOMMENDATIONS",
    "TECHNIQUE",
    "TYPE OF EXAMINATION",
    "WET READ",
];

/// Upper case, letters only, single spaces: "Recommendation(s)" -> "RECOMMENDATIONS",
/// "Findings/Impression" -> "FINDINGS IMPRESSION".
fn normalise_header(name: &str) -> String {
    let spaced: String = name
        .chars()
        .filter_map(|c| match c {
            '/' | '&' | '-' => Some(' '),
            c if c.is_alphabetic() || c.is_whitespace() => Some(c),
            _ => None,
        })
        .collect();
    spaced
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// A section header found in a report: its name starts at byte `start`, its text at `body`.
struct Header {
    start: usize,
    body: usize,
    keep: bool,
}

/// The header starting at byte `i` of `text`, if any: a known section name (case-insensitive,
/// at most 40 bytes) followed by a colon.
fn header_at(text: &str, i: usize) -> Option<Header> {
    let rest = &text[i..];
    let colon = rest.find(|c: char| !(c.is_alphabetic() || " \t/&-()".contains(c)))?;
    if colon > 40 || !rest[colon..].starts_with(':') {
        return None;
    }
    let name = &rest[..colon];
    let name = normalise_header(name);
    let keep = is_kept_section(&name);
    (keep || OTHER_SECTIONS.contains(&name.as_str())).then_some(Header {
        start: i,
        body: i + colon + 1,
        keep,
    })
}

/// The section headers of `text`, in order. A header starts a line or follows the end of a
/// sentence ("... clear. IMPRESSION: ...").
fn headers(text: &str) -> Vec<Header> {
    let mut found: Vec<Header> = Vec::new();
    let mut prev: Option<char> = None; // the last non-blank character
    let mut gap = false; // blank seen since `prev`
    let mut newline = false; // line break seen since `prev`
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            gap = true;
            newline |= c == '\n';
            continue;
        }
        let boundary = match prev {
            None => true,
            Some(p) => newline || (gap && ".?!".contains(p)),
        };
        let inside_last = found.last().is_some_and(|h| i < h.body);
        if boundary && c.is_alphabetic() && !inside_last {
            if let Some(h) = header_at(text, i) {
                found.push(h);
            }
        }
        prev = Some(c);
        gap = false;
        newline = false;
    }
    found
}

/// The sentences of the FINDINGS and IMPRESSION sections of `report` (headers matched
/// case-insensitively, also as "FINDINGS AND IMPRESSION:"), in order; other sections
/// (EXAMINATION, INDICATION, COMPARISON, TECHNIQUE, RECOMMENDATION(S), NOTIFICATION, ...) and
/// anything before the first header are left out. A report with neither section yields the
/// sentences of its whole text.
pub fn sections(report: &str) -> Vec<String> {
    let found = headers(report);
    if !found.iter().any(|h| h.keep) {
        return split_sentences(report);
    }
    let mut out = Vec::new();
    for (k, h) in found.iter().enumerate() {
        if h.keep {
            let end = found.get(k + 1).map_or(report.len(), |next| next.start);
            out.extend(split_sentences(&report[h.body..end]));
        }
    }
    out
}

/// Abbreviations after which a period never ends a sentence (lower case, without the final
/// period).
const ABBREVIATIONS: [&str; 14] = [
    "approx", "cf", "dr", "e.g", "eg", "fig", "i.e", "ie", "mr", "mrs", "ms", "prof", "st", "vs",
];

/// `s` without a leading list marker ("1. ", "2) ", "- ", "* ", "• ").
fn strip_list_marker(s: &str) -> &str {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let after = &s[digits..];
        if let Some(rest) = after.strip_prefix('.').or_else(|| after.strip_prefix(')')) {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return rest.trim_start();
            }
        }
    }
    for bullet in ["-", "*", "•"] {
        if let Some(rest) = s.strip_prefix(bullet) {
            if rest.starts_with(char::is_whitespace) {
                return rest.trim_start();
            }
        }
    }
    s
}

/// Paragraphs of `text`: hard-wrapped lines joined by a space; a blank line or a line that
/// starts with a list marker opens a new paragraph.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if (line.is_empty() || strip_list_marker(line) != line) && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if !line.is_empty() {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(line);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether the '.', '?' or '!' at `chars[i]` ends the sentence that started at `start`.
fn ends_sentence(chars: &[char], start: usize, i: usize) -> bool {
    if !".?!".contains(chars[i]) || chars.get(i + 1).is_some_and(|c| !c.is_whitespace()) {
        return false; // decimals ("2.5"), "e.g" inside, "?effusion"
    }
    if chars[i] != '.' {
        return true;
    }
    let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
    let Some(&next) = next else {
        return true;
    };
    let mut w = i;
    while w > start && !chars[w - 1].is_whitespace() {
        w -= 1;
    }
    let word: String = chars[w..i]
        .iter()
        .skip_while(|c| "([\"'".contains(**c))
        .collect();
    let word = word.to_lowercase();
    let lead_is_empty = chars[start..w].iter().all(|c| c.is_whitespace());
    let list_number =
        !word.is_empty() && word.len() <= 3 && word.bytes().all(|b| b.is_ascii_digit());
    let initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
    !(lead_is_empty && list_number // "1. Small effusion."
        || initial // "J. Smith"
        || ABBREVIATIONS.contains(&word.as_str())
        || word == "no" && next.is_ascii_digit() // "No. 5"
        || next.is_lowercase()) // "approx. 3 cm", "etc. and"
}

/// Trims, collapses blanks and strips a list marker; `None` when nothing readable is left.
fn clean(sentence: &str) -> Option<String> {
    let joined = sentence.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = strip_list_marker(&joined);
    s.chars().any(char::is_alphanumeric).then(|| s.to_string())
}

/// Splits `text` into sentences: hard line wraps are joined, blank lines and list items
/// ("1.", "2)", "-") separate, and a '.', '?' or '!' followed by a blank ends a sentence unless
/// it closes an abbreviation ("Dr.", "e.g.", "i.e.", "vs.", "approx.", "No. 5"), an initial or
/// a list number, or the next word starts in lower case. Decimals ("2.5 cm") never split. List
/// markers are removed, blanks collapsed, and pieces without a letter or digit dropped.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let chars: Vec<char> = para.chars().collect();
        let mut start = 0;
        for i in 0..chars.len() {
            if ends_sentence(&chars, start, i) {
                out.extend(clean(&chars[start..=i].iter().collect::<String>()));
                start = i + 1;
            }
        }
        out.extend(clean(&chars[start..].iter().collect::<String>()));
    }
    out
}

/// One sentence drawn uniformly from `report_sentences`; "" when there are none.
pub fn sample_sentence<'a>(report_sentences: &'a [String], rng: &mut Rng) -> &'a str {
    if report_sentences.is_empty() {
        return "";
    }
    rng.choose(report_sentences).as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIMIC_PNEUMONIA: &str = "                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough and fever, evaluate for pneumonia.

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:

 There is a new patchy opacity in the right lower lobe measuring approx. 2.5 cm,
 concerning for pneumonia.  The left lung is clear.  Heart size is normal, i.e.
 there is no cardiomegaly.  The mediastinal and hilar contours are unremarkable.
 No pleural effusion or pneumothorax is seen.

 IMPRESSION:

 1. Right lower lobe pneumonia.
 2. No pleural effusion.

 RECOMMENDATION(S):  Follow-up radiograph in 6 weeks.

 NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on ___ at 10:30 a.m.
";

    #[test]
    fn mimic_report_keeps_findings_and_impression() {
        assert_eq!(
            sections(MIMIC_PNEUMONIA),
            [
                "There is a new patchy opacity in the right lower lobe measuring approx. 2.5 cm, \
                 concerning for pneumonia.",
                "The left lung is clear.",
                "Heart size is normal, i.e. there is no cardiomegaly.",
                "The mediastinal and hilar contours are unremarkable.",
                "No pleural effusion or pneumothorax is seen.",
                "Right lower lobe pneumonia.",
                "No pleural effusion.",
            ]
        );
    }

    #[test]
    fn wet_read_and_numbered_impression_on_one_line() {
        let report = "WET READ: ___ ___ 8:12 PM  No pneumothorax.
                                 FINAL REPORT
 HISTORY:  Status post line placement.

 FINDINGS:  Portable AP upright chest radiograph.  A right-sided PICC line terminates
 in the mid SVC.  There is a small left apical pneumothorax, measuring 1.2 cm vs.
 0.8 cm on the prior study.  Mild cardiomegaly is unchanged.

 IMPRESSION:  1. Small left apical pneumothorax, slightly larger.  2. Stable mild
 cardiomegaly.
";
        assert_eq!(
            sections(report),
            [
                "Portable AP upright chest radiograph.",
                "A right-sided PICC line terminates in the mid SVC.",
                "There is a small left apical pneumothorax, measuring 1.2 cm vs. 0.8 cm on the \
                 prior study.",
                "Mild cardiomegaly is unchanged.",
                "Small left apical pneumothorax, slightly larger.",
                "Stable mild cardiomegaly.",
            ]
        );
    }

    #[test]
    fn lowercase_inline_and_combined_headers() {
        let report = "Indication: Dyspnea. Findings: The heart is enlarged. \
                      Impression: Cardiomegaly, e.g. from volume overload.";
        assert_eq!(
            sections(report),
            [
                "The heart is enlarged.",
                "Cardiomegaly, e.g. from volume overload."
            ]
        );
        let report = "EXAMINATION: CHEST (PORTABLE AP)\n\nFINDINGS AND IMPRESSION:\n\
                      - Endotracheal tube No. 7 is 4 cm above the carina.\n\
                      - Bibasilar atelectasis.\n\nCOMPARISON: None.";
        assert_eq!(
            sections(report),
            [
                "Endotracheal tube No. 7 is 4 cm above the carina.",
                "Bibasilar atelectasis."
            ]
        );
        // Only an impression.
        assert_eq!(
            sections("INDICATION: Fever.\nIMPRESSION: No acute process."),
            ["No acute process."]
        );
    }

    #[test]
    fn without_sections_the_whole_text() {
        let report = "PA and lateral views of the chest.\nThe lungs are clear.  No effusion.";
        assert_eq!(
            sections(report),
            [
                "PA and lateral views of the chest.",
                "The lungs are clear.",
                "No effusion."
            ]
        );
        assert!(sections("").is_empty());
        assert!(sections("  \n\n  ").is_empty());
    }

    #[test]
    fn sentence_splitting_edge_cases() {
        let cases: [(&str, &[&str]); 7] = [
            (
                "A 1.2 cm nodule is seen. It is unchanged since 2.5 years ago.",
                &[
                    "A 1.2 cm nodule is seen.",
                    "It is unchanged since 2.5 years ago.",
                ],
            ),
            (
                "Dr. J. Smith was paged at 3 p.m. The patient was stable.",
                &[
                    "Dr. J. Smith was paged at 3 p.m.",
                    "The patient was stable.",
                ],
            ),
            (
                "Is there a pneumothorax?  No.  Lines etc. are unchanged.",
                &[
                    "Is there a pneumothorax?",
                    "No.",
                    "Lines etc. are unchanged.",
                ],
            ),
            (
                "1. Effusion.\n2. Edema.\n3) Nodule.",
                &["Effusion.", "Edema.", "Nodule."],
            ),
            ("Measures 5 mm. 2. Stable.", &["Measures 5 mm.", "Stable."]),
            ("  .  \n\n ...  ", &[]),
            (
                "Moderate   effusion\n  with\tatelectasis.\n\nNo pneumothorax",
                &["Moderate effusion with atelectasis.", "No pneumothorax"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(split_sentences(text), want, "{text:?}");
        }
    }

    #[test]
    fn sampling_is_uniform_and_handles_empty() {
        let sentences = sections(MIMIC_PNEUMONIA);
        let mut rng = Rng::new(1);
        let mut counts = vec![0usize; sentences.len()];
        for _ in 0..7000 {
            let s = sample_sentence(&sentences, &mut rng);
            counts[sentences.iter().position(|x| x == s).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(sample_sentence(&[], &mut rng), "");
    }
}
