//! The embedded default corpus: chest-X-ray-like pictures with MIMIC-style reports and labels,
//! generated on the fly. Each sample is a pure function of (seed, index), so a loader can make
//! any sample, in any order, on any thread.
//!
//! The pictures are drawn in the radiological convention (the patient's right on the image's
//! left), in normalised coordinates ([0, 1] across the image) so that any size looks the same:
//! dark lung fields with vessel markings fanning out from the hila, a bright mediastinum and
//! heart, posterior ribs (curved bright bands), clavicles, spine, diaphragm domes with deep
//! costophrenic angles, soft tissue and a dark background; patient size, position, tilt,
//! exposure, contrast and noise vary. Findings are drawn where the report says they are, large
//! enough to be seen at 96 px, and so are support devices (tubes, lines, a pacemaker, sternotomy
//! wires) with where they end. The reports say little that the picture does not show: a
//! sentence drawn from one should usually single out its picture among a batch.

use super::image::Image;
use super::rng::Rng;
use crate::error::{Error, Result};
use std::path::Path;

/// The findings the corpus labels (CheXpert names). A sample with none is "No Finding".
pub const FINDINGS: [&str; 8] = [
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Atelectasis",
    "Nodule",
    "Fracture",
];

/// The label of a sample without findings.
pub const NO_FINDING: &str = "No Finding";

const CARDIOMEGALY: usize = 0;
const EFFUSION: usize = 1;
const PNEUMOTHORAX: usize = 2;
const CONSOLIDATION: usize = 3;
const EDEMA: usize = 4;
const ATELECTASIS: usize = 5;
const NODULE: usize = 6;
const FRACTURE: usize = 7;

/// One generated image-report pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// A grey (one channel) `size` x `size` picture.
    pub image: Image,
    /// The report: optional header sections, then FINDINGS and IMPRESSION.
    pub report: String,
    /// Which of [`FINDINGS`] the picture shows.
    pub labels: [bool; FINDINGS.len()],
}

impl Sample {
    /// The names of the findings shown, or `[NO_FINDING]`.
    pub fn finding_names(&self) -> Vec<&'static str> {
        let names: Vec<&str> = (0..FINDINGS.len())
            .filter(|&k| self.labels[k])
            .map(|k| FINDINGS[k])
            .collect();
        if names.is_empty() {
            vec![NO_FINDING]
        } else {
            names
        }
    }
}

/// The side at which the corpus is drawn for training at `image_size`: larger, so that random
/// crops keep detail.
pub fn corpus_size(image_size: usize) -> usize {
    image_size * 5 / 4
}

/// Sample `index` of the corpus of `seed`, with a `size` x `size` picture. About 15% of the
/// samples show no finding, the others one to three; more than half carry support devices.
pub fn generate(index: u64, size: usize, seed: u64) -> Sample {
    let rng = Rng::new(seed).fork(index);
    let findings = draw_findings(&mut rng.fork(0));
    let devices = Devices::draw(&mut rng.fork(4));
    let scene = Scene::new(&findings, &devices, &mut rng.fork(1));
    let image = scene.render(size, &mut rng.fork(2));
    let report = report_of(index, seed);
    let mut labels = [false; FINDINGS.len()];
    for f in &findings {
        labels[f.kind] = true;
    }
    Sample {
        image,
        report,
        labels,
    }
}

/// A finding: where (side 0 = the patient's right, 1 = left; upper or lower zone), how bad
/// (severity 0 = mild, 1 = moderate, 2 = large) and, for a fracture, which rib (0 = the
/// highest drawn).
#[derive(Debug, Clone, Copy)]
struct Finding {
    kind: usize,
    side: usize,
    upper: bool,
    severity: usize,
    rib: usize,
}

fn draw_findings(rng: &mut Rng) -> Vec<Finding> {
    if rng.bernoulli(0.15) {
        return Vec::new();
    }
    let count = match rng.f64() {
        u if u < 0.5 => 1,
        u if u < 0.83 => 2,
        _ => 3,
    };
    let mut kinds: Vec<usize> = (0..FINDINGS.len()).collect();
    rng.shuffle(&mut kinds);
    kinds[..count]
        .iter()
        .map(|&kind| draw_finding(kind, rng))
        .collect()
}

/// Where and how bad a finding of `kind` is.
fn draw_finding(kind: usize, rng: &mut Rng) -> Finding {
    let upper = match kind {
        EFFUSION => false,
        PNEUMOTHORAX => true,
        ATELECTASIS => rng.bernoulli(0.25),
        _ => rng.bernoulli(0.5),
    };
    Finding {
        kind,
        side: rng.below(2) as usize,
        upper,
        severity: rng.below(3) as usize,
        rib: if upper { 2 } else { 5 } + rng.below(3) as usize,
    }
}

/// Support devices: radiopaque tubes, lines and hardware, common on inpatient radiographs and
/// always reported, each with where it ends. They make pairs tell apart where findings do not
/// (a normal study with a central line is not any normal study).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Devices {
    /// Endotracheal tube: its tip 2, 4 or 6 cm above the carina (0, 1, 2).
    endotracheal: Option<usize>,
    /// Enteric tube: its tip in the stomach (true) or in the distal oesophagus.
    enteric: Option<bool>,
    /// Central venous catheter: (from the right internal jugular (0) or the left subclavian
    /// vein (1), tip in the mid SVC (false) or at the cavoatrial junction (true)).
    central_line: Option<(usize, bool)>,
    /// Left-sided pacemaker with one lead (right ventricle) or two (and right atrium).
    pacemaker: Option<usize>,
    sternotomy: bool,
}

impl Devices {
    fn draw(rng: &mut Rng) -> Devices {
        let endotracheal = rng.bernoulli(0.2).then(|| rng.below(3) as usize);
        // Intubated patients usually have an enteric tube too.
        let p_enteric = if endotracheal.is_some() { 0.7 } else { 0.08 };
        Devices {
            endotracheal,
            enteric: rng.bernoulli(p_enteric).then(|| rng.bernoulli(0.75)),
            central_line: rng
                .bernoulli(0.25)
                .then(|| (rng.below(2) as usize, rng.bernoulli(0.5))),
            pacemaker: rng.bernoulli(0.12).then(|| 1 + rng.below(2) as usize),
            sternotomy: rng.bernoulli(0.12),
        }
    }
}

/// The labels of sample `index` of the corpus of `seed` (what [`generate`] returns in
/// `labels`), without drawing its picture: evaluation picks its items by label cheaply.
pub fn labels_of(index: u64, seed: u64) -> [bool; FINDINGS.len()] {
    let mut labels = [false; FINDINGS.len()];
    for f in draw_findings(&mut Rng::new(seed).fork(index).fork(0)) {
        labels[f.kind] = true;
    }
    labels
}

/// The report of sample `index` of the corpus of `seed` (what [`generate`] returns in
/// `report`), without drawing its picture: a vocabulary needs the reports alone.
///
/// ```
/// use convirt::data::synthetic::{generate, report_of};
///
/// assert_eq!(report_of(3, 0), generate(3, 16, 0).report);
/// ```
pub fn report_of(index: u64, seed: u64) -> String {
    let rng = Rng::new(seed).fork(index);
    let findings = draw_findings(&mut rng.fork(0));
    let devices = Devices::draw(&mut rng.fork(4));
    write_report(&findings, &devices, &mut rng.fork(3))
}

/// `n` findings-section sentences, as the reports phrase them, each describing finding `kind`
/// (an index into [`FINDINGS`]) at a random side and severity: text queries for retrieval.
pub fn finding_sentences(kind: usize, n: usize, seed: u64) -> Vec<String> {
    let rng = Rng::new(seed).fork(kind as u64);
    (0..n as u64)
        .map(|i| {
            let mut r = rng.fork(i);
            let f = draw_finding(kind % FINDINGS.len(), &mut r);
            describe(&f, &mut r).0
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pictures

/// Grey level of the air around the patient.
const BACKGROUND: f32 = 0.03;
/// Grey level of the mediastinum and heart.
const MEDIASTINUM: f32 = 0.78;
/// Brightness a rib adds.
const RIB: f32 = 0.095;
/// The heart's long axis dips 0.4 rad towards the image's right; its short axis is 0.7 of it.
const HEART_COS: f32 = 0.921_061;
const HEART_SIN: f32 = 0.389_418;
const HEART_ASPECT: f32 = 0.7;

/// 0 below -w, 1 above w, smooth in between: a soft edge at signed distance `d`.
fn step(d: f32, w: f32) -> f32 {
    let s = (d / (2.0 * w) + 0.5).clamp(0.0, 1.0);
    s * s * (3.0 - 2.0 * s)
}

/// Distance from (t, y) to a segment, and the position along it in [0, 1].
fn segment_distance(s: &Segment, t: f32, y: f32) -> f32 {
    let (dt, dy) = (s.t1 - s.t0, s.y1 - s.y0);
    let len2 = (dt * dt + dy * dy).max(1e-12);
    let a = (((t - s.t0) * dt + (y - s.y0) * dy) / len2).clamp(0.0, 1.0);
    ((t - s.t0 - a * dt).powi(2) + (y - s.y0 - a * dy).powi(2)).sqrt()
}

/// A thick segment in (lateral distance, y) coordinates: a vessel or a band of atelectasis.
#[derive(Debug, Clone)]
struct Segment {
    t0: f32,
    y0: f32,
    t1: f32,
    y1: f32,
    half: f32,
    amp: f32,
}

/// One lung in (t = lateral distance from the midline, y) coordinates.
#[derive(Debug, Clone)]
struct Lung {
    top: f32,
    /// Height of the top of the diaphragm dome.
    dome: f32,
    inner: f32,
    outer: f32,
}

impl Lung {
    /// From the apex to the bottom of the costophrenic angle.
    fn height(&self) -> f32 {
        self.dome + 0.09 - self.top
    }

    /// The lateral extent (from, to) of the lung at row y: a rounded apex a third of the way
    /// out, the medial border reaching the mediastinum early and the lateral border widening
    /// down to half the height.
    fn span(&self, y: f32) -> (f32, f32) {
        let q = ((y - self.top) / self.height()).clamp(0.0, 1.0);
        let arc = |s: f32| (1.0 - (1.0 - s.min(1.0)).powi(2)).sqrt();
        let apex = self.inner + 0.35 * (self.outer - self.inner);
        (
            apex - (apex - self.inner) * arc(q / 0.2),
            apex + (self.outer - apex) * arc(q / 0.55),
        )
    }

    /// The diaphragm under lateral distance t: a dome, deepest at the costophrenic angle.
    fn floor(&self, t: f32) -> f32 {
        let peak = self.inner + 0.55 * (self.outer - self.inner);
        if t > peak {
            self.dome + 0.09 * ((t - peak) / (self.outer - peak)).min(1.2).powi(2)
        } else {
            self.dome + 0.05 * ((peak - t) / (peak - self.inner)).min(1.0).powi(2)
        }
    }

    fn mask(&self, t: f32, y: f32, e: f32) -> f32 {
        let (lo, hi) = self.span(y);
        step(t - lo, e) * step(hi - t, e) * step(y - self.top, e) * step(self.floor(t) - y, e)
    }

    /// The top of an effusion filling a fraction `f` of the lung's height: a meniscus rising
    /// towards the chest wall.
    fn fluid_level(&self, t: f32, f: f32) -> f32 {
        let u = ((t - self.inner) / (self.outer - self.inner)).clamp(0.0, 1.0);
        self.dome + 0.06 - f * self.height() - 0.06 * u * u
    }
}

#[derive(Debug, Clone)]
struct Pneumothorax {
    side: usize,
    depth: f32,
    extent: f32,
}

#[derive(Debug, Clone)]
struct Fracture {
    side: usize,
    rib: usize,
    t: f32,
    gap: f32,
    offset: f32,
}

/// Everything one picture needs, drawn once; rendering is then a pure function of the pixel.
#[derive(Debug, Clone)]
struct Scene {
    cx: f32,
    tilt: f32,
    body: f32,
    lungs: [Lung; 2],
    /// Heart ellipse: centre x, y and the long and short half-axes; the centre lies near the
    /// diaphragm, so about the upper half shows.
    heart: [f32; 4],
    mediastinum: f32,
    rib_spacing: f32,
    rib_half: f32,
    tissue: f32,
    lung_grey: f32,
    vessels: [Vec<Segment>; 2],
    /// Smooth exposure variation over a 5 x 5 grid.
    field: [[f32; 5]; 5],
    contrast: f32,
    brightness: f32,
    gamma: f32,
    noise: f32,
    /// Fraction of each lung's height filled by fluid (0 = none).
    effusion: [f32; 2],
    pneumothorax: Option<Pneumothorax>,
    /// Consolidation: side and Gaussian blobs (t, y, sigma).
    consolidation: Option<(usize, Vec<[f32; 3]>, f32)>,
    /// Edema: perihilar haze sigma along t and y, and strength.
    edema: Option<[f32; 3]>,
    atelectasis: Option<(usize, Segment)>,
    /// Nodule: side, t, y, radius.
    nodule: Option<(usize, f32, f32, f32)>,
    fracture: Option<Fracture>,
    /// Support devices as thick segments in (x, y) image coordinates (not lateral distance).
    hardware: Vec<Segment>,
}

impl Scene {
    fn new(findings: &[Finding], devices: &Devices, rng: &mut Rng) -> Scene {
        let size = rng.uniform(0.88, 1.06);
        let cx = 0.5 + rng.uniform(-0.025, 0.025);
        let top = 0.14 + (1.06 - size) * 0.25 + rng.uniform(-0.015, 0.015);
        let outer = 0.36 * size;
        let inner = 0.055 * size;
        let dome = top + 0.53 * size + rng.uniform(-0.02, 0.02);
        let lung = |dome| Lung {
            top,
            dome,
            inner,
            outer,
        };
        // The right dome (side 0) sits a little higher than the left.
        let mut lungs = [lung(dome - 0.02), lung(dome + rng.uniform(-0.005, 0.01))];
        let find = |kind| findings.iter().find(|f| f.kind == kind).copied();

        if let Some(f) = find(ATELECTASIS) {
            if !f.upper {
                lungs[f.side].dome -= [0.02, 0.035, 0.05][f.severity];
            }
        }
        let ctr = match find(CARDIOMEGALY) {
            Some(f) => [0.55, 0.61, 0.68][f.severity] + rng.uniform(-0.01, 0.01),
            None => rng.uniform(0.38, 0.47),
        };
        // An ellipse of axes a > b whose long axis dips towards the patient's left, a third of
        // its width right of the midline, two thirds left: its horizontal half-extent is
        // ctr * outer.
        let heart_half = ctr * outer;
        let a = heart_half / (HEART_COS.powi(2) + (HEART_ASPECT * HEART_SIN).powi(2)).sqrt();
        let heart = [
            cx + 0.33 * heart_half,
            0.5 * (lungs[0].dome + lungs[1].dome) - 0.01,
            a,
            HEART_ASPECT * a,
        ];
        let vessels = [
            vessel_tree(&lungs[0], size, rng),
            vessel_tree(&lungs[1], size, rng),
        ];
        let mut field = [[0.0f32; 5]; 5];
        for v in field.iter_mut().flatten() {
            *v = rng.uniform(-0.04, 0.04);
        }
        let mut scene = Scene {
            cx,
            tilt: rng.uniform(-0.05, 0.05),
            body: outer + rng.uniform(0.06, 0.1),
            heart,
            mediastinum: inner,
            rib_spacing: (0.5 * (lungs[0].dome + lungs[1].dome) - top + 0.05) / 9.6,
            rib_half: 0.011 * size,
            tissue: rng.uniform(0.45, 0.58),
            lung_grey: rng.uniform(0.11, 0.2),
            vessels,
            field,
            contrast: rng.uniform(0.75, 1.25),
            brightness: rng.uniform(-0.07, 0.07),
            gamma: rng.uniform(0.8, 1.25),
            noise: rng.uniform(0.008, 0.03),
            effusion: [0.0; 2],
            pneumothorax: None,
            consolidation: None,
            edema: None,
            atelectasis: None,
            nodule: None,
            fracture: None,
            hardware: Vec::new(),
            lungs,
        };
        for f in findings {
            scene.add(f, size, rng);
        }
        scene.place(devices);
        scene
    }

    /// Lays out the support devices along the anatomy: tubes down the trachea and oesophagus,
    /// lines through the great veins, a pacemaker in the left upper chest, wires down the sternum.
    fn place(&mut self, d: &Devices) {
        let (cx, top) = (self.cx, self.lungs[0].top);
        let carina = top + 0.22 * self.lungs[0].height();
        let left_dome = self.lungs[1].dome;
        let [hx, hy, a, _] = self.heart;
        let mut path = |points: &[(f32, f32)], half: f32, amp: f32| {
            for w in points.windows(2) {
                self.hardware.push(Segment {
                    t0: w[0].0,
                    y0: w[0].1,
                    t1: w[1].0,
                    y1: w[1].1,
                    half,
                    amp,
                });
            }
        };
        if let Some(level) = d.endotracheal {
            let tip = carina - [0.05, 0.1, 0.14][level];
            path(&[(cx + 0.004, -0.02), (cx + 0.004, tip)], 0.008, 0.3);
        }
        if let Some(in_stomach) = d.enteric {
            let oesophagus = [
                (cx + 0.016, -0.02),
                (cx + 0.018, carina),
                (cx + 0.03, left_dome - 0.06),
            ];
            if in_stomach {
                let mut p = oesophagus.to_vec();
                p.extend([(cx + 0.07, left_dome + 0.05), (cx + 0.15, left_dome + 0.08)]);
                path(&p, 0.005, 0.28);
            } else {
                path(&oesophagus[..2], 0.005, 0.28);
                path(
                    &[(cx + 0.018, carina), (cx + 0.026, left_dome - 0.1)],
                    0.005,
                    0.28,
                );
            }
        }
        if let Some((from, deep)) = d.central_line {
            let tip = (cx - 0.032, carina + if deep { 0.09 } else { 0.01 });
            let route: &[(f32, f32)] = if from == 0 {
                &[
                    (cx - 0.1, -0.02),
                    (cx - 0.06, top - 0.01),
                    (cx - 0.035, carina - 0.02),
                ]
            } else {
                &[
                    (cx + 0.32, top - 0.01),
                    (cx + 0.18, top + 0.02),
                    (cx + 0.06, top + 0.05),
                    (cx - 0.03, carina - 0.02),
                ]
            };
            let mut p = route.to_vec();
            p.push(tip);
            path(&p, 0.004, 0.3);
        }
        if let Some(leads) = d.pacemaker {
            path(&[(cx + 0.2, top), (cx + 0.25, top + 0.005)], 0.03, 0.55);
            let vein = [
                (cx + 0.2, top + 0.005),
                (cx + 0.07, top + 0.04),
                (cx - 0.03, carina + 0.02),
            ];
            let mut ventricle = vein.to_vec();
            ventricle.extend([(cx - 0.01, hy - 0.04), (hx + 0.25 * a, hy - 0.01)]);
            path(&ventricle, 0.0045, 0.35);
            if leads == 2 {
                path(
                    &[
                        vein[2],
                        (cx - 0.06, carina + 0.08),
                        (cx - 0.045, carina + 0.11),
                    ],
                    0.0045,
                    0.35,
                );
            }
        }
        if d.sternotomy {
            let (first, last) = (top + 0.06, hy - 0.02);
            for k in 0..6 {
                let y = first + k as f32 * (last - first) / 5.0;
                path(&[(cx - 0.012, y), (cx + 0.012, y)], 0.006, 0.5);
            }
        }
    }

    /// Draws the shape of finding `f` into the scene.
    fn add(&mut self, f: &Finding, size: f32, rng: &mut Rng) {
        let lung = self.lungs[f.side].clone();
        let h = lung.height();
        let sev = f.severity;
        match f.kind {
            EFFUSION => self.effusion[f.side] = [0.06, 0.2, 0.38][sev],
            PNEUMOTHORAX => {
                self.pneumothorax = Some(Pneumothorax {
                    side: f.side,
                    depth: [0.03, 0.05, 0.085][sev] * size,
                    extent: [0.35, 0.6, 1.0][sev],
                })
            }
            CONSOLIDATION => {
                let y = lung.top + if f.upper { 0.3 } else { 0.62 } * h + rng.uniform(-0.03, 0.03);
                let (lo, hi) = lung.span(y);
                let t = lo + rng.uniform(0.4, 0.65) * (hi - lo);
                let r = [0.05, 0.07, 0.095][sev] * size;
                let blobs = (0..7)
                    .map(|_| {
                        [
                            t + 0.45 * r * rng.normal() as f32,
                            y + 0.45 * r * rng.normal() as f32,
                            r * rng.uniform(0.3, 0.55),
                        ]
                    })
                    .collect();
                self.consolidation = Some((f.side, blobs, [0.22, 0.3, 0.38][sev]));
            }
            EDEMA => {
                self.edema = Some([
                    [0.08, 0.11, 0.14][sev] * size,
                    [0.1, 0.13, 0.17][sev] * size,
                    [0.13, 0.19, 0.27][sev],
                ])
            }
            ATELECTASIS => {
                let y = lung.top + if f.upper { 0.35 } else { 0.64 } * h;
                let (lo, hi) = lung.span(y);
                let t = 0.5 * (lo + hi) + rng.uniform(-0.1, 0.1) * (hi - lo);
                let (half_len, angle) = (0.065 * size, rng.uniform(-0.3, 0.3));
                let (dt, dy) = (half_len * angle.cos(), half_len * angle.sin());
                let band = Segment {
                    t0: t - dt,
                    y0: y - dy,
                    t1: t + dt,
                    y1: y + dy,
                    half: [0.005, 0.0075, 0.011][sev] * size,
                    amp: 0.3,
                };
                self.atelectasis = Some((f.side, band));
            }
            NODULE => {
                let q = if f.upper {
                    rng.uniform(0.22, 0.4)
                } else {
                    rng.uniform(0.5, 0.62)
                };
                let y = lung.top + q * h;
                let (lo, hi) = lung.span(y);
                let t = lo + rng.uniform(0.4, 0.8) * (hi - lo);
                self.nodule = Some((f.side, t, y, [0.02, 0.027, 0.035][sev] * size));
            }
            FRACTURE => {
                self.fracture = Some(Fracture {
                    side: f.side,
                    rib: f.rib,
                    t: lung.outer * rng.uniform(0.35, 0.6),
                    gap: [0.02, 0.025, 0.03][sev] * size,
                    offset: [0.012, 0.02, 0.03][sev] * size,
                })
            }
            // Cardiomegaly is the heart's size, set with the anatomy.
            _ => {}
        }
    }

    /// The picture, `n` x `n`, with pixel noise from `rng`.
    fn render(&self, n: usize, rng: &mut Rng) -> Image {
        let e = (1.2 / n as f32).max(0.003);
        let (sin, cos) = self.tilt.sin_cos();
        let mut data = Vec::with_capacity(n * n);
        for py in 0..n {
            for px in 0..n {
                let u = (px as f32 + 0.5) / n as f32;
                let v = (py as f32 + 0.5) / n as f32;
                let x = 0.5 + cos * (u - 0.5) - sin * (v - 0.5);
                let y = 0.5 + sin * (u - 0.5) + cos * (v - 0.5);
                let g = self.density(x, y, e).clamp(0.0, 1.0).powf(self.gamma);
                let g = (g - 0.45) * self.contrast
                    + 0.45
                    + self.brightness
                    + self.exposure(u, v)
                    + self.noise * rng.normal() as f32;
                data.push(g.clamp(0.0, 1.0));
            }
        }
        Image {
            width: n,
            height: n,
            channels: 1,
            data,
        }
    }

    /// The smooth exposure field at image position (u, v).
    fn exposure(&self, u: f32, v: f32) -> f32 {
        let (gu, gv) = (u.clamp(0.0, 1.0) * 4.0, v.clamp(0.0, 1.0) * 4.0);
        let (i, j) = ((gu as usize).min(3), (gv as usize).min(3));
        let smooth = |f: f32| f * f * (3.0 - 2.0 * f);
        let (fu, fv) = (smooth(gu - i as f32), smooth(gv - j as f32));
        let f = &self.field;
        (1.0 - fv) * ((1.0 - fu) * f[j][i] + fu * f[j][i + 1])
            + fv * ((1.0 - fu) * f[j + 1][i] + fu * f[j + 1][i + 1])
    }

    /// Grey level before the global exposure, contrast and noise; `e` is the edge softness.
    fn density(&self, x: f32, y: f32, e: f32) -> f32 {
        let side = usize::from(x >= self.cx);
        let t = (x - self.cx).abs();
        let lung = &self.lungs[side];

        let shoulders = self.body * (1.0 - 0.05 * y);
        let body_half = 0.08 + (shoulders - 0.08) * step(y - 0.09, 0.07);
        let body = step(body_half - t, e);
        let abdomen = step(y - lung.floor(t), 2.0 * e) * body;
        let [hx, hy, a, b] = self.heart;
        let (dx, dy) = (x - hx, y - hy);
        let (along, across) = (
            HEART_COS * dx + HEART_SIN * dy,
            HEART_COS * dy - HEART_SIN * dx,
        );
        let r = ((along / a).powi(2) + (across / b).powi(2)).sqrt();
        let heart = step((1.0 - r) * b, e);
        let knob = if side == 1 {
            0.03 * (-((y - lung.top - 0.13) / 0.035).powi(2)).exp()
        } else {
            0.0
        };
        let med = step(self.mediastinum + knob - t, e) * step(y - lung.top + 0.08, e);
        let central = heart.max(med);
        let carina = lung.top + 0.22 * lung.height();
        let trachea =
            med * step(0.013 * self.lungs[0].outer / 0.36 - t, e) * step(carina - y, 0.02);
        let air = lung.mask(t, y, e) * (1.0 - central);
        let fluid = if self.effusion[side] > 0.0 {
            step(y - lung.fluid_level(t, self.effusion[side]), 0.012)
        } else {
            0.0
        };
        let aerated = air * (1.0 - fluid);
        let (ptx, pleura) = self.pneumothorax(side, t, y, e);

        let mut g = BACKGROUND + (self.tissue - BACKGROUND) * body + 0.07 * abdomen;
        g += (MEDIASTINUM - g) * central * body - 0.2 * trachea;
        let lung_grey = self.lung_grey + 0.05 * (1.0 - t / lung.outer).clamp(0.0, 1.0) - 0.06 * ptx;
        g += (lung_grey - g) * aerated + 0.04 * air * fluid;
        if aerated > 0.01 {
            g += aerated * (1.0 - ptx) * self.markings(side, t, y);
        }
        g += air * pleura;
        if let Some([st, sy, amp]) = self.edema {
            let (lo, _) = lung.span(y);
            let (ht, hy) = (lo + 0.03, lung.top + 0.45 * lung.height());
            let haze =
                (-(t - ht).powi(2) / (2.0 * st * st) - (y - hy).powi(2) / (2.0 * sy * sy)).exp();
            g += aerated * amp * haze;
        }
        if let Some((s, blobs, amp)) = &self.consolidation {
            if *s == side {
                let sum: f32 = blobs
                    .iter()
                    .map(|[bt, by, sg]| {
                        (-((t - bt).powi(2) + (y - by).powi(2)) / (2.0 * sg * sg)).exp()
                    })
                    .sum();
                g += aerated * amp * (1.0 - (-1.3 * sum).exp());
            }
        }
        if let Some((s, band)) = &self.atelectasis {
            if *s == side {
                let half = band.half.max(0.7 * e);
                let d = segment_distance(band, t, y);
                g += air * band.amp * (band.half / half).min(1.0).sqrt() * step(half - d, 0.5 * e);
            }
        }
        if let Some((s, nt, ny, r)) = self.nodule {
            if s == side {
                let d = ((t - nt).powi(2) + (y - ny).powi(2)).sqrt();
                let dome = (1.0 - (d / r).powi(2)).max(0.0).sqrt();
                g += lung.mask(t, y, e) * 0.32 * step(r - d, 0.5 * e) * (0.6 + 0.4 * dome);
            }
        }
        if let Some(f) = self.fracture.as_ref().filter(|f| f.side == side) {
            // A small extrapleural haematoma against the break.
            let d2 = (t - f.t).powi(2) + (y - self.rib_y(lung, f.rib, f.t)).powi(2);
            g += 0.16 * (-d2 / (2.0 * 0.022f32.powi(2))).exp();
        }
        let behind = 1.0 - 0.7 * central;
        g + body * (RIB * behind * self.ribs(side, t, y, e) + self.bones(t, y, e))
            + self.hardware(x, y, e)
    }

    /// Support devices at image position (x, y): the brightest one there.
    fn hardware(&self, x: f32, y: f32, e: f32) -> f32 {
        self.hardware
            .iter()
            .map(|s| {
                let half = s.half.max(0.7 * e);
                let d = segment_distance(s, x, y);
                s.amp * (s.half / half).min(1.0).sqrt() * step(half - d, 0.5 * e)
            })
            .fold(0.0, f32::max)
    }

    /// Pneumothorax at (t, y) of lung `side`: (how much of the pixel is free air, the pleural
    /// line's brightness).
    fn pneumothorax(&self, side: usize, t: f32, y: f32, e: f32) -> (f32, f32) {
        let Some(p) = &self.pneumothorax else {
            return (0.0, 0.0);
        };
        if p.side != side {
            return (0.0, 0.0);
        }
        let lung = &self.lungs[side];
        let end = lung.top + p.extent * lung.height();
        let taper = 1.0 - step(y - end, 0.06);
        let depth = p.depth * taper;
        let (_, hi) = lung.span(y);
        let edge = (hi - t - depth).min(y - lung.top - 0.8 * p.depth);
        let width = (0.8 * e).max(0.004);
        (
            step(-edge, e) * taper,
            0.22 * taper * (-(edge / width).powi(2)).exp(),
        )
    }

    /// Vessel markings: the strongest branch under (t, y).
    fn markings(&self, side: usize, t: f32, y: f32) -> f32 {
        let gain = match self.edema {
            Some(_) => 1.5,
            None => 1.0,
        };
        self.vessels[side]
            .iter()
            .map(|s| s.amp * (-(segment_distance(s, t, y) / s.half).powi(2)).exp())
            .fold(0.0, f32::max)
            * gain
    }

    /// The centre line of posterior rib `k` of `lung` at lateral distance t: rising a little
    /// from the spine, then curving down towards the chest wall.
    fn rib_y(&self, lung: &Lung, k: usize, t: f32) -> f32 {
        let u = t / lung.outer;
        let y0 = lung.top - 0.03 + k as f32 * self.rib_spacing * (0.9 + 0.02 * k as f32);
        y0 - 0.05 * u + 0.17 * u * u
    }

    /// Posterior ribs (0 to 1), with the fracture's gap and offset.
    fn ribs(&self, side: usize, t: f32, y: f32, e: f32) -> f32 {
        let lung = &self.lungs[side];
        let ends = step(t - 0.02, e) * step(lung.outer + 0.05 - t, e);
        if ends <= 0.0 {
            return 0.0;
        }
        let half = self.rib_half.max(0.8 * e);
        let mut v = 0.0f32;
        for k in 0..10 {
            let mut yr = self.rib_y(lung, k, t);
            let mut gap = 1.0;
            if let Some(f) = self
                .fracture
                .as_ref()
                .filter(|f| f.side == side && f.rib == k)
            {
                if t > f.t {
                    yr += f.offset + 0.25 * f.offset / f.gap * (t - f.t);
                }
                gap = step((t - f.t).abs() - 0.5 * f.gap.max(1.5 * e), 0.5 * e);
            }
            v = v.max(step(half - (y - yr).abs(), 0.5 * e) * gap);
        }
        v * ends
    }

    /// Clavicles and spine (grey level added).
    fn bones(&self, t: f32, y: f32, e: f32) -> f32 {
        let top = self.lungs[0].top;
        let w = t / (0.75 * self.lungs[0].outer);
        let clavicle_y = top + 0.03 - 0.05 * w + 0.012 * w * w;
        let clavicle =
            step(0.013 - (y - clavicle_y).abs(), e) * step(t - 0.02, e) * step(1.0 - w, e);
        let phase = (y - top) / self.rib_spacing * std::f32::consts::TAU;
        let spine = step(0.028 - t, e) * step(y - top + 0.1, 0.05) * (0.035 + 0.02 * phase.cos());
        0.16 * clavicle + spine
    }
}

/// Vessels fanning out from the hilum of `lung`: nine branches of three segments, thinner and
/// fainter towards the periphery, each with a side branch.
fn vessel_tree(lung: &Lung, size: f32, rng: &mut Rng) -> Vec<Segment> {
    let (t0, y0) = (lung.inner + 0.02, lung.top + 0.42 * lung.height());
    let mut out = Vec::new();
    let branches = 9;
    for b in 0..branches {
        let mut angle = -1.25 + 2.2 * (b as f32 + rng.uniform(0.2, 0.8)) / branches as f32;
        let (mut t, mut y) = (t0, y0);
        for s in 0..3 {
            let len = rng.uniform(0.06, 0.09) * size;
            let (t1, y1) = (t + len * angle.cos(), y + len * angle.sin());
            let seg = Segment {
                t0: t,
                y0: y,
                t1,
                y1,
                half: [0.0045, 0.003, 0.002][s] * size,
                amp: [0.1, 0.07, 0.045][s],
            };
            if s == 1 {
                let a = angle + if rng.bernoulli(0.5) { 0.5 } else { -0.5 };
                out.push(Segment {
                    t1: t + 0.8 * len * a.cos(),
                    y1: y + 0.8 * len * a.sin(),
                    half: 0.002 * size,
                    amp: 0.05,
                    ..seg.clone()
                });
            }
            out.push(seg);
            (t, y) = (t1, y1);
            angle += 0.2 * rng.normal() as f32;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reports

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match n {
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A findings-section sentence and an impression sentence for a finding that is present.
fn describe(f: &Finding, rng: &mut Rng) -> (String, String) {
    let s = ["right", "left"][f.side];
    let zone = if f.upper { "upper" } else { "lower" };
    let sev = f.severity;
    let mut pick = |options: Vec<String>| rng.choose(&options).clone();
    match f.kind {
        CARDIOMEGALY => {
            let adj = ["mild", "moderate", "severe"][sev];
            let adv = ["mildly", "moderately", "markedly"][sev];
            let cap = capitalise(adj);
            let text = pick(vec![
                format!("The heart is {adv} enlarged."),
                format!("{cap} cardiomegaly is present."),
                format!("There is {adj} enlargement of the cardiac silhouette."),
                format!("The cardiac silhouette is {adv} enlarged."),
            ]);
            (text, format!("{cap} cardiomegaly."))
        }
        EFFUSION => {
            let adj = ["small", "moderate", "large"][sev];
            let cap = capitalise(adj);
            let mut options = vec![
                format!("There is a {adj} {s} pleural effusion."),
                format!("{cap} {s}-sided pleural effusion."),
                format!("{cap} {s} pleural effusion with blunting of the {s} costophrenic angle."),
                format!("A {adj} {s} pleural effusion layers at the {s} base."),
            ];
            if sev == 0 {
                options.push(format!(
                    "Blunting of the {s} costophrenic angle is consistent with a small pleural \
                     effusion."
                ));
            }
            (pick(options), format!("{cap} {s} pleural effusion."))
        }
        PNEUMOTHORAX => {
            let adj = ["small", "moderate", "large"][sev];
            let cap = capitalise(adj);
            let text = pick(vec![
                format!("There is a {adj} {s} apical pneumothorax."),
                format!("A {adj} {s} pneumothorax is seen at the apex."),
                format!(
                    "A visceral pleural line is seen at the {s} apex, consistent with a {adj} \
                     pneumothorax."
                ),
                format!("{cap} {s} pneumothorax, with no lung markings beyond the pleural line."),
            ]);
            (text, format!("{cap} {s} pneumothorax."))
        }
        CONSOLIDATION => {
            let adj = ["subtle", "patchy", "dense"][sev];
            let cap = capitalise(adj);
            let lobe = format!("{s} {zone} lobe");
            let text = pick(vec![
                format!("There is {adj} consolidation in the {lobe}."),
                format!("{cap} opacity in the {lobe}, concerning for pneumonia."),
                format!("Focal {adj} consolidation is seen in the {lobe}."),
                format!(
                    "{cap} airspace consolidation in the {lobe}, compatible with pneumonia in \
                     the appropriate clinical setting."
                ),
            ]);
            let impression = pick(vec![
                format!("{cap} {lobe} consolidation."),
                format!("{} pneumonia.", capitalise(&lobe)),
            ]);
            (text, impression)
        }
        EDEMA => {
            let adj = ["mild", "moderate", "severe"][sev];
            let cap = capitalise(adj);
            let text = pick(vec![
                format!("There is {adj} pulmonary edema."),
                format!(
                    "{cap} pulmonary vascular congestion and perihilar haziness, consistent \
                     with pulmonary edema."
                ),
                format!("Bilateral perihilar opacities are consistent with {adj} pulmonary edema."),
                format!("{cap} interstitial pulmonary edema."),
            ]);
            (text, format!("{cap} pulmonary edema."))
        }
        ATELECTASIS => {
            let adj = ["minimal", "mild", "moderate"][sev];
            let cap = capitalise(adj);
            let place = if f.upper {
                format!("{s} upper lobe")
            } else {
                pick(vec![format!("{s} lung base"), format!("{s} lower lobe")])
            };
            let mut options = vec![
                format!("{cap} plate-like atelectasis in the {place}."),
                format!("Linear opacity in the {place}, likely {adj} atelectasis."),
                format!("There is {adj} subsegmental atelectasis in the {place}."),
            ];
            if !f.upper {
                options.push(format!(
                    "{cap} {s} basilar atelectasis with elevation of the {s} hemidiaphragm."
                ));
            }
            (pick(options), format!("{cap} atelectasis in the {place}."))
        }
        NODULE => {
            let mm = [6, 10, 16][sev] + rng.below([4, 6, 9][sev]) as usize;
            let size = if mm >= 10 && rng.bernoulli(0.5) {
                format!("{}.{} cm", mm / 10, mm % 10)
            } else {
                format!("{mm} mm")
            };
            let mut pick = |options: Vec<String>| rng.choose(&options).clone();
            let text = pick(vec![
                format!("There is a {size} nodule in the {s} {zone} lung zone."),
                format!("A {size} nodular opacity is seen in the {s} {zone} lung."),
                format!("{size} {s} {zone} lobe pulmonary nodule."),
                format!(
                    "Rounded {size} opacity projecting over the {s} {zone} lung, likely a nodule."
                ),
            ]);
            let impression = pick(vec![
                format!(
                    "{size} {s} {zone} lobe nodule; recommend chest CT for further evaluation."
                ),
                format!("Pulmonary nodule in the {s} {zone} lobe."),
            ]);
            (text, impression)
        }
        _ => {
            let adj = ["nondisplaced", "minimally displaced", "displaced"][sev];
            let cap = capitalise(adj);
            let rib = ordinal(f.rib + 2);
            let text = pick(vec![
                format!("There is a {adj} fracture of the {s} posterior {rib} rib."),
                format!("{cap} fracture of the {s} {rib} rib."),
                format!("A {adj} {s} {rib} rib fracture is noted."),
                format!(
                    "Cortical discontinuity of the {s} posterior {rib} rib, consistent with a \
                     {adj} fracture."
                ),
            ]);
            (text, format!("{cap} {s} {rib} rib fracture."))
        }
    }
}

/// Findings sentences and impressions for the support devices present.
fn describe_devices(d: &Devices, rng: &mut Rng) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pick = |options: Vec<String>| rng.choose(&options).clone();
    if let Some(level) = d.endotracheal {
        let cm = [2, 4, 6][level];
        out.push((
            pick(vec![
                format!("An endotracheal tube terminates {cm} cm above the carina."),
                format!("The endotracheal tube tip is {cm} cm above the carina."),
                format!("Endotracheal tube in place, its tip {cm} cm from the carina."),
            ]),
            format!("Endotracheal tube {cm} cm above the carina."),
        ));
    }
    if let Some(in_stomach) = d.enteric {
        out.push(if in_stomach {
            (
                pick(vec![
                    "An enteric tube courses below the diaphragm, its tip in the stomach.".into(),
                    "A nasogastric tube is in place with its tip in the stomach.".into(),
                    "The orogastric tube terminates in the stomach.".into(),
                ]),
                "Enteric tube in the stomach.".into(),
            )
        } else {
            (
                pick(vec![
                    "The enteric tube tip is in the distal esophagus; advancing it is recommended."
                        .into(),
                    "A nasogastric tube ends in the distal esophagus.".into(),
                ]),
                "Enteric tube tip in the distal esophagus; recommend advancing it.".into(),
            )
        });
    }
    if let Some((from, deep)) = d.central_line {
        let vein = ["right internal jugular", "left subclavian"][from];
        let tip = ["in the mid SVC", "at the cavoatrial junction"][usize::from(deep)];
        out.push((
            pick(vec![
                format!("A {vein} central venous catheter terminates {tip}."),
                format!("{} central line with its tip {tip}.", capitalise(vein)),
                format!("There is a {vein} catheter ending {tip}."),
            ]),
            format!("{} line tip {tip}.", capitalise(vein)),
        ));
    }
    if let Some(leads) = d.pacemaker {
        out.push(if leads == 1 {
            (
                pick(vec![
                    "A left-sided pacemaker is present with a single lead in the right ventricle."
                        .into(),
                    "Left chest wall pacer with its lead terminating in the right ventricle."
                        .into(),
                ]),
                "Single-lead pacemaker.".into(),
            )
        } else {
            (
                pick(vec![
                    "A left-sided dual-chamber pacemaker is present with leads in the right \
                     atrium and right ventricle."
                        .into(),
                    "Left chest wall pacemaker with leads in the right atrium and right ventricle."
                        .into(),
                ]),
                "Dual-chamber pacemaker.".into(),
            )
        });
    }
    if d.sternotomy {
        out.push((
            pick(vec![
                "Median sternotomy wires are intact.".into(),
                "The patient is status post median sternotomy.".into(),
                "Sternotomy wires are noted.".into(),
            ]),
            "Status post median sternotomy.".into(),
        ));
    }
    out
}

/// Ways of saying that finding `kind` is absent.
fn negations(kind: usize) -> &'static [&'static str] {
    match kind {
        CARDIOMEGALY => &[
            "Heart size is normal.",
            "The heart is normal in size.",
            "The cardiac silhouette is within normal limits.",
            "No cardiomegaly.",
        ],
        EFFUSION => &[
            "No pleural effusion.",
            "There is no pleural effusion.",
            "No pleural effusion is seen.",
            "The costophrenic angles are sharp.",
        ],
        PNEUMOTHORAX => &[
            "No pneumothorax.",
            "There is no pneumothorax.",
            "No pneumothorax is identified.",
        ],
        CONSOLIDATION => &[
            "No focal consolidation.",
            "There is no focal consolidation to suggest pneumonia.",
            "No focal airspace consolidation is seen.",
        ],
        EDEMA => &[
            "No pulmonary edema.",
            "There is no pulmonary vascular congestion.",
            "No evidence of pulmonary edema.",
        ],
        ATELECTASIS => &["No atelectasis."],
        NODULE => &[
            "No suspicious pulmonary nodules.",
            "No focal nodules are seen.",
        ],
        _ => &[
            "No acute osseous abnormality.",
            "No displaced rib fractures are seen.",
            "The osseous structures are intact.",
        ],
    }
}

const NORMAL: [&str; 5] = [
    "The mediastinal contours are unremarkable.",
    "The hilar contours are normal.",
    "The mediastinal and hilar contours are within normal limits.",
    "The visualized upper abdomen is unremarkable.",
    "The soft tissues are unremarkable.",
];

const INDICATIONS: [&str; 9] = [
    "shortness of breath",
    "cough",
    "chest pain",
    "fever and cough",
    "dyspnea on exertion",
    "pre-operative evaluation",
    "fall, evaluate for injury",
    "hypoxia",
    "follow-up",
];

/// `text` hard-wrapped at about `width` columns with a leading space on each line, as in
/// MIMIC-CXR.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&format!(" {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!(" {line}\n"));
    }
    out
}

fn write_report(findings: &[Finding], devices: &Devices, rng: &mut Rng) -> String {
    let present = |kind| findings.iter().any(|f| f.kind == kind);
    let mut sentences = Vec::new();
    let mut impressions = Vec::new();
    for f in findings {
        let (text, impression) = describe(f, rng);
        sentences.push(text);
        impressions.push(impression);
    }
    for (text, impression) in describe_devices(devices, rng) {
        sentences.push(text);
        if rng.bernoulli(0.5) {
            impressions.push(impression);
        }
    }
    let lungs_clear = ![
        EFFUSION,
        PNEUMOTHORAX,
        CONSOLIDATION,
        EDEMA,
        ATELECTASIS,
        NODULE,
    ]
    .iter()
    .any(|&k| present(k));
    if lungs_clear && rng.bernoulli(0.6) {
        sentences.push("The lungs are clear.".into());
    }
    // Negations and boilerplate are kept sparse: a sentence drawn from the report should more
    // often than not say something about the picture, or a small model learns little per step.
    let said_both = !present(EFFUSION) && !present(PNEUMOTHORAX) && rng.bernoulli(0.15);
    if said_both {
        sentences.push("No pleural effusion or pneumothorax.".into());
    }
    for kind in 0..FINDINGS.len() {
        let p = if kind == ATELECTASIS { 0.03 } else { 0.1 };
        let covered = said_both && (kind == EFFUSION || kind == PNEUMOTHORAX);
        if !present(kind) && !covered && rng.bernoulli(p) {
            sentences.push(rng.choose(negations(kind)).to_string());
        }
    }
    if rng.bernoulli(0.15) {
        sentences.push(rng.choose(&NORMAL).to_string());
    }
    rng.shuffle(&mut sentences);
    rng.shuffle(&mut impressions);

    let mut report = String::new();
    if rng.bernoulli(0.75) {
        let (exam, technique) = *rng.choose(&[
            ("CHEST (PA AND LAT)", "Chest PA and lateral"),
            (
                "CHEST (PORTABLE AP)",
                "Portable AP upright chest radiograph",
            ),
        ]);
        let who = *rng.choose(&["man", "woman"]);
        let why = *rng.choose(&INDICATIONS);
        let comparison = *rng.choose(&["None.", "___.", "Chest radiograph from ___."]);
        report.push_str(&format!(
            "                                 FINAL REPORT\n EXAMINATION:  {exam}\n\n \
             INDICATION:  ___ year old {who} with {why}.\n\n TECHNIQUE:  {technique}\n\n \
             COMPARISON:  {comparison}\n\n"
        ));
    }
    report.push_str(" FINDINGS:\n\n");
    report.push_str(&wrap(&sentences.join("  "), 72));
    report.push_str("\n IMPRESSION:\n\n");
    let impression = if impressions.is_empty() {
        rng.choose(&[
            "No acute cardiopulmonary process.",
            "No acute cardiopulmonary abnormality.",
            "Normal chest radiograph.",
            "No acute intrathoracic process.",
        ])
        .to_string()
    } else if impressions.len() > 1 && rng.bernoulli(0.5) {
        let numbered: Vec<String> = impressions
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        numbered.join("\n")
    } else {
        impressions.join("  ")
    };
    for line in impression.lines() {
        report.push_str(&wrap(line, 72));
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Contact sheet

/// The colour of each finding's cell in a contact sheet's strip, in [`FINDINGS`] order:
/// cardiomegaly red, effusion blue, pneumothorax yellow, consolidation orange, edema cyan,
/// atelectasis magenta, nodule green, fracture white.
pub const FINDING_COLOURS: [[u8; 3]; 8] = [
    [220, 50, 50],
    [50, 100, 235],
    [240, 220, 40],
    [245, 140, 30],
    [40, 200, 220],
    [200, 60, 200],
    [60, 200, 80],
    [255, 255, 255],
];

/// Writes a PNG grid of the samples' pictures to `path`, each tile with a strip under it of
/// eight cells, one per finding in [`FINDINGS`] order, lit in its [`FINDING_COLOURS`] when the
/// sample shows it (all dark: no finding).
pub fn contact_sheet(samples: &[Sample], path: &Path) -> Result<()> {
    let fail = |why: String| Error::Invalid {
        op: "contact_sheet",
        why: format!("{}: {why}", path.display()),
    };
    if samples.is_empty() {
        return Err(fail("no samples to show".into()));
    }
    let tile_w = samples
        .iter()
        .map(|s| s.image.width)
        .max()
        .unwrap_or(0)
        .max(16);
    let tile_h = samples.iter().map(|s| s.image.height).max().unwrap_or(0);
    let strip = (tile_w / 16).max(4);
    let cols = (samples.len() as f64).sqrt().ceil() as usize;
    let rows = samples.len().div_ceil(cols);
    let (pad, cell_h) = (3, tile_h + strip + 1);
    let width = cols * (tile_w + pad) + pad;
    let height = rows * (cell_h + pad) + pad;
    let mut sheet =
        ::image::RgbImage::from_pixel(width as u32, height as u32, ::image::Rgb([24, 28, 40]));
    for (k, sample) in samples.iter().enumerate() {
        let (x0, y0) = (
            pad + (k % cols) * (tile_w + pad),
            pad + (k / cols) * (cell_h + pad),
        );
        let img = &sample.image;
        for y in 0..img.height {
            for x in 0..img.width {
                let channel = |c: usize| {
                    (img.at(c.min(img.channels - 1), y, x).clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let px = ::image::Rgb([channel(0), channel(1), channel(2)]);
                sheet.put_pixel((x0 + x) as u32, (y0 + y) as u32, px);
            }
        }
        for x in 0..tile_w {
            let cell = x * FINDINGS.len() / tile_w;
            let lit = sample.labels[cell];
            let colour = if lit {
                FINDING_COLOURS[cell]
            } else {
                [55, 55, 60]
            };
            let border = x > 0 && cell != (x - 1) * FINDINGS.len() / tile_w;
            for y in 0..strip {
                let c = if border { [0, 0, 0] } else { colour };
                sheet.put_pixel(
                    (x0 + x) as u32,
                    (y0 + tile_h + 1 + y) as u32,
                    ::image::Rgb(c),
                );
            }
        }
    }
    sheet
        .save(path)
        .map_err(|e| fail(format!("cannot write the PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::report::sections;
    use super::*;

    #[test]
    fn deterministic_per_seed_and_index() {
        let a = generate(17, 64, 5);
        assert_eq!(a, generate(17, 64, 5));
        assert_ne!(a.image, generate(18, 64, 5).image);
        assert_ne!(a.image, generate(17, 64, 6).image);
        assert_eq!(
            (a.image.width, a.image.height, a.image.channels),
            (64, 64, 1)
        );
        assert!(a.image.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn labels_of_and_report_of_agree_with_generate() {
        for i in 0..50 {
            let sample = generate(i, 8, 3);
            assert_eq!(labels_of(i, 3), sample.labels, "sample {i}");
            assert_eq!(report_of(i, 3), sample.report, "sample {i}");
        }
    }

    #[test]
    fn devices_are_drawn_and_reported() {
        // Each device is reported whenever present, and only then.
        let mut seen = [0usize; 5];
        for i in 0..300 {
            let rng = Rng::new(4).fork(i);
            let d = Devices::draw(&mut rng.fork(4));
            let text = sections(&report_of(i, 4)).join(" ").to_lowercase();
            let present = [
                d.endotracheal.is_some(),
                d.enteric.is_some(),
                d.central_line.is_some(),
                d.pacemaker.is_some(),
                d.sternotomy,
            ];
            let words = [
                "endotracheal",
                "tube",
                "catheter|central line|line tip",
                "pacemaker|pacer",
                "sternotomy",
            ];
            for (k, (&p, w)) in present.iter().zip(words).enumerate() {
                seen[k] += p as usize;
                let said = w.split('|').any(|w| text.contains(w));
                // "tube" also names the endotracheal tube.
                if k != 1 || d.endotracheal.is_none() {
                    assert_eq!(said, p, "device {k} in {text}");
                }
            }
            if let Some(level) = d.endotracheal {
                assert!(text.contains(&format!("{} cm", [2, 4, 6][level])), "{text}");
            }
        }
        assert!(seen.iter().all(|&n| n >= 15), "{seen:?}");

        // Drawn radiopaque: an endotracheal tube brightens the trachea above the carina, a
        // pacemaker the patient's left upper chest.
        let base = Scene::new(&[], &Devices::default(), &mut Rng::new(9));
        let clean = noiseless(base.clone());
        let with = |d: Devices| {
            let mut scene = base.clone();
            scene.place(&d);
            noiseless(scene)
        };
        let (cx, top) = (base.cx, base.lungs[0].top);
        let tube = with(Devices {
            endotracheal: Some(1),
            ..Devices::default()
        });
        let column = (cx - 0.01)..(cx + 0.02);
        assert!(
            mean_in(&tube, column.clone(), 0.02..top) > mean_in(&clean, column, 0.02..top) + 0.05
        );
        let pacer = with(Devices {
            pacemaker: Some(2),
            ..Devices::default()
        });
        let pocket = (cx + 0.19)..(cx + 0.26);
        let band = (top - 0.02)..(top + 0.02);
        assert!(
            mean_in(&pacer, pocket.clone(), band.clone()) > mean_in(&clean, pocket, band) + 0.2
        );
    }

    #[test]
    fn finding_sentences_name_their_finding() {
        let words = [
            ["cardiomegaly", "enlarge"].as_slice(),
            &["effusion"],
            &["pneumothorax"],
            &["consolidation", "pneumonia", "opacity"],
            &["edema"],
            &["atelectasis"],
            &["nodul"],
            &["fracture"],
        ];
        for (kind, any_of) in words.iter().enumerate() {
            let a = finding_sentences(kind, 5, 1);
            assert_eq!(a, finding_sentences(kind, 5, 1));
            assert_eq!(a.len(), 5);
            for s in &a {
                let l = s.to_lowercase();
                assert!(
                    any_of.iter().any(|w| l.contains(w)),
                    "{}: {s}",
                    FINDINGS[kind]
                );
            }
        }
    }

    #[test]
    fn label_mix_and_reports_agree() {
        let n = 400;
        let (mut none, mut counts) = (0, [0usize; 8]);
        for i in 0..n {
            let s = generate(i, 8, 1);
            let k = s.labels.iter().filter(|&&l| l).count();
            assert!(k <= 3, "{k} findings");
            if k == 0 {
                none += 1;
                assert_eq!(s.finding_names(), [NO_FINDING]);
            }
            for (c, &l) in counts.iter_mut().zip(&s.labels) {
                *c += l as usize;
            }
            let text = sections(&s.report).join(" ").to_lowercase();
            assert!(!text.is_empty(), "{}", s.report);
            assert!(s.report.contains("FINDINGS:") && s.report.contains("IMPRESSION:"));
            // Each present finding is named in the report (as the radiologist would say it).
            let said = [
                ["cardiomegaly", "enlarge"].as_slice(),
                &["effusion"],
                &["pneumothorax"],
                &["consolidation", "pneumonia", "opacity in the"],
                &["edema"],
                &["atelectasis"],
                &["nodul"],
                &["fracture"],
            ];
            for (k, words) in said.iter().enumerate() {
                if s.labels[k] {
                    assert!(
                        words.iter().any(|w| text.contains(w)),
                        "{}: {}",
                        FINDINGS[k],
                        s.report
                    );
                }
            }
            if s.labels[EFFUSION] {
                assert!(!text.contains("no pleural effusion"), "{}", s.report);
            }
            if s.labels[PNEUMOTHORAX] {
                assert!(!text.contains("no pneumothorax"), "{}", s.report);
            }
        }
        let frac = none as f64 / n as f64;
        assert!((0.1..0.2).contains(&frac), "no finding in {frac}");
        assert!(counts.iter().all(|&c| c > 30), "{counts:?}");
    }

    /// `scene` at 96 px without pixel noise, so pictures of the same anatomy compare exactly.
    fn noiseless(mut scene: Scene) -> Image {
        scene.noise = 0.0;
        scene.render(96, &mut Rng::new(2))
    }

    fn mean_in(img: &Image, x: std::ops::Range<f32>, y: std::ops::Range<f32>) -> f32 {
        let n = img.width;
        let (mut sum, mut count) = (0.0, 0);
        for py in 0..n {
            for px in 0..n {
                let (u, v) = ((px as f32 + 0.5) / n as f32, (py as f32 + 0.5) / n as f32);
                if x.contains(&u) && y.contains(&v) {
                    sum += img.at(0, py, px);
                    count += 1;
                }
            }
        }
        sum / count as f32
    }

    #[test]
    fn anatomy_and_findings_are_visible() {
        // Lungs darker than the mediastinum and the abdomen, on average over many samples.
        let (mut lung, mut centre, mut belly) = (0.0, 0.0, 0.0);
        for i in 0..20 {
            let img = generate(i, 96, 3).image;
            lung += mean_in(&img, 0.25..0.35, 0.3..0.5);
            centre += mean_in(&img, 0.47..0.53, 0.3..0.5);
            belly += mean_in(&img, 0.3..0.7, 0.92..0.99);
        }
        assert!(
            lung + 2.0 < centre && lung + 2.0 < belly,
            "{lung} {centre} {belly}"
        );

        // A large right effusion brightens the image's lower left; a large left pneumothorax
        // darkens the upper right. Same anatomy, with and without the finding.
        let base = Scene::new(&[], &Devices::default(), &mut Rng::new(9));
        let with = |kind, side| {
            let mut scene = base.clone();
            let f = Finding {
                kind,
                side,
                upper: kind == PNEUMOTHORAX,
                severity: 2,
                rib: 5,
            };
            scene.add(&f, 1.0, &mut Rng::new(1));
            noiseless(scene)
        };
        let clean = noiseless(base.clone());
        let fx = with(EFFUSION, 0);
        assert!(mean_in(&fx, 0.15..0.4, 0.55..0.75) > mean_in(&clean, 0.15..0.4, 0.55..0.75) + 0.1);
        let ptx = with(PNEUMOTHORAX, 1);
        assert!(mean_in(&ptx, 0.7..0.85, 0.2..0.5) < mean_in(&clean, 0.7..0.85, 0.2..0.5));
        // Cardiomegaly is the heart's size, part of the anatomy: same draws, a wider heart.
        let big = Finding {
            kind: CARDIOMEGALY,
            side: 0,
            upper: false,
            severity: 1,
            rib: 5,
        };
        let enlarged = Scene::new(&[big], &Devices::default(), &mut Rng::new(9));
        assert!(
            enlarged.heart[2] > 1.2 * base.heart[2],
            "{:?} {:?}",
            enlarged.heart,
            base.heart
        );
        assert_eq!(enlarged.lungs[0].outer, base.lungs[0].outer);
        for kind in [CONSOLIDATION, EDEMA, ATELECTASIS, NODULE, FRACTURE] {
            let img = with(kind, 0);
            let diff: f32 = img
                .data
                .iter()
                .zip(&clean.data)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(
                diff > 2.0,
                "{} changes the picture by {diff}",
                FINDINGS[kind]
            );
        }
    }

    #[test]
    fn contact_sheet_writes_a_png() {
        let samples: Vec<Sample> = (0..5).map(|i| generate(i, 32, 2)).collect();
        let path = std::env::temp_dir().join(format!("convirt-sheet-{}.png", std::process::id()));
        contact_sheet(&samples, &path).unwrap();
        let back = ::image::open(&path).unwrap();
        assert_eq!(
            (back.width(), back.height()),
            ((3 * 35 + 3) as u32, (2 * (32 + 4 + 1 + 3) + 3) as u32)
        );
        let _ = std::fs::remove_file(&path);
        assert!(contact_sheet(&[], &path).is_err());
    }
}
