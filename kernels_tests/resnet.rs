//! ResNet against PyTorch: torchvision ResNet-18 in training mode (logits, and the gradients of
//! the input and nine parameters) and evaluation mode, and ResNet-50 in evaluation mode, on
//! weights given by a formula (../shared/fixtures/README.md) rebuilt here exactly.

use crate::common::*;
use convirt::models::resnet::{Arch, Head, ResNet};
use convirt::nn::StateDict;
use convirt::{no_grad, reference, Tensor};
use std::collections::BTreeMap;

fn fixture() -> StateDict {
    let path = fixture_path("resnet_reference.safetensors");
    StateDict::read(&path).unwrap_or_else(|e| {
        panic!("{e}\nThe ResNet reference lives in the shared fixtures folder beside the repository (../shared/fixtures, or CONVIRT_FIXTURES); CI provides it.")
    })
}

/// The fixture's formula (formula_weights.py): splitmix64 of (FNV-1a of the name ^ seed, index).
fn uniform(name: &str, n: usize, seed: u64) -> Vec<f64> {
    let mut h: u64 = 1469598103934665603 ^ seed;
    for c in name.bytes() {
        h = (h ^ c as u64).wrapping_mul(1099511628211);
    }
    (0..n as u64)
        .map(|i| {
            let mut z = i.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(h);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            2.0 * (z >> 40) as f64 / (1u64 << 24) as f64 - 1.0
        })
        .collect()
}

fn formula_weight(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let x = uniform(name, n, seed);
    let is_bn = name.contains(".bn") || name.starts_with("bn") || name.contains("downsample.1");
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    x.iter()
        .map(|&u| {
            (if name.ends_with("running_var") {
                0.5 + 0.5 * u.abs()
            } else if name.ends_with("running_mean") {
                0.1 * u
            } else if is_bn && name.ends_with(".weight") {
                0.8 + 0.2 * u
            } else if name.ends_with(".bias") {
                0.05 * u
            } else {
                u * (6.0 / fan_in as f64).sqrt()
            }) as f32
        })
        .collect()
}

/// `"name": [d0, d1, ...]` pairs of the fixture's shape metadata (a flat JSON object).
fn torchvision_shapes(meta: &str) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for part in meta.split("], ") {
        let Some((key, dims)) = part.rsplit_once(": [") else {
            continue;
        };
        let name = key.rsplit('"').nth(1).unwrap_or_default().to_string();
        let dims: Vec<usize> = dims
            .trim_end_matches([']', '}'])
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect();
        if !name.ends_with("num_batches_tracked") {
            out.insert(name, dims);
        }
    }
    out
}

/// Writes the formula weights (with the fixture's calibrated running statistics for eval) as a
/// torchvision safetensors file and loads it through the real loader.
fn load(fix: &StateDict, arch: Arch, eval_stats: bool) -> ResNet {
    let shapes = torchvision_shapes(&fix.metadata[arch.name()]);
    let g = gpu();
    let mut tensors = Vec::new();
    for (name, shape) in &shapes {
        let stats_key = format!("{}.stats.{name}", arch.name());
        let data = match fix.tensors.get(&stats_key) {
            Some((_, stats)) if eval_stats => stats.clone(),
            _ => formula_weight(name, shape, 1),
        };
        tensors.push((name.clone(), Tensor::from_slice(&g, &data, shape).unwrap()));
    }
    let dir = std::env::temp_dir().join(format!(
        "convirt-test-{}-{}",
        arch.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{eval_stats}.safetensors", arch.name()));
    StateDict::write(&path, &tensors, Default::default()).unwrap();
    let net = ResNet::load(&g, &path, arch, 1000, Head::Required).expect("load formula weights");
    let ours: Vec<String> = net.named().into_iter().map(|(n, _)| n).collect();
    let theirs: Vec<&String> = shapes.keys().collect();
    let mut ours_sorted = ours.clone();
    ours_sorted.sort();
    assert_eq!(
        ours_sorted.iter().collect::<Vec<_>>(),
        theirs,
        "state-dict names differ from torchvision's"
    );
    net
}

fn tensor_of(fix: &StateDict, key: &str) -> (Vec<usize>, Vec<f64>) {
    let (shape, data) = fix
        .tensors
        .get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"));
    (shape.clone(), data.iter().map(|&v| v as f64).collect())
}

#[test]
fn resnet18_train_forward_and_backward_match_pytorch() {
    let fix = fixture();
    let net = load(&fix, Arch::ResNet18, false);
    let (x_shape, x) = tensor_of(&fix, "resnet18.input");
    let input = Tensor::param(&gpu(), &to_f32(&x), &x_shape).unwrap();
    let logits = net.forward(&input, true).unwrap();
    let (_, want) = tensor_of(&fix, "resnet18.train.logits");
    assert_close(
        "resnet18 train logits",
        &logits.to_vec().unwrap(),
        &want,
        1e-4,
    );

    let (w_shape, w) = tensor_of(&fix, "resnet18.train.loss_weight");
    let loss = logits
        .mul(&upload(&w, &w_shape))
        .unwrap()
        .sum_all()
        .unwrap();
    loss.backward().unwrap();
    let (_, want) = tensor_of(&fix, "resnet18.train.grad.input");
    assert_close(
        "resnet18 d loss / d input",
        &input.grad().unwrap().to_vec().unwrap(),
        &want,
        1e-3,
    );
    let params: BTreeMap<String, Tensor> = net.named().into_iter().collect();
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer3.1.bn2.weight",
        "layer4.0.downsample.0.weight",
        "fc.weight",
        "fc.bias",
    ] {
        let (_, want) = tensor_of(&fix, &format!("resnet18.train.grad.{name}"));
        let got = params[name]
            .grad()
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        assert_close(
            &format!("resnet18 d loss / d {name}"),
            &got.to_vec().unwrap(),
            &want,
            1e-3,
        );
    }
}

#[test]
fn resnet18_and_resnet50_eval_match_pytorch() {
    let fix = fixture();
    for arch in [Arch::ResNet18, Arch::ResNet50] {
        let net = load(&fix, arch, true);
        let (x_shape, x) = tensor_of(&fix, &format!("{}.input", arch.name()));
        let input = upload(&x, &x_shape);
        let pooled = net.features(&input, false).unwrap();
        let logits = net.fc.forward(&pooled).unwrap();
        let (_, want) = tensor_of(&fix, &format!("{}.eval.pooled", arch.name()));
        assert_close(
            &format!("{} eval pooled", arch.name()),
            &pooled.to_vec().unwrap(),
            &want,
            1e-4,
        );
        let (_, want) = tensor_of(&fix, &format!("{}.eval.logits", arch.name()));
        assert_close(
            &format!("{} eval logits", arch.name()),
            &logits.to_vec().unwrap(),
            &want,
            1e-4,
        );
    }
}

#[test]
fn loading_reports_missing_unexpected_and_misshaped_tensors() {
    let g = gpu();
    let dir = std::env::temp_dir().join(format!("convirt-test-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net = ResNet::random(&g, Arch::ResNet18, 10, 3).unwrap();
    let full = net.named();
    let write = |name: &str, tensors: &[(String, Tensor)]| {
        let p = dir.join(name);
        StateDict::write(&p, tensors, Default::default()).unwrap();
        p
    };
    // Round trip.
    let p = write("ok.safetensors", &full);
    ResNet::load(&g, &p, Arch::ResNet18, 10, Head::Required).expect("round trip");
    // A missing tensor is named.
    let p = write("missing.safetensors", &full[1..]);
    let err = ResNet::load(&g, &p, Arch::ResNet18, 10, Head::Required)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'conv1.weight'") && err.contains("missing"),
        "{err}"
    );
    // A head of another size: an error, unless the head may be replaced.
    let err = ResNet::load(
        &g,
        &p.with_file_name("ok.safetensors"),
        Arch::ResNet18,
        7,
        Head::Required,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("'fc.weight'") && err.to_string().contains("[7, 512]"),
        "{err}"
    );
    ResNet::load(
        &g,
        &dir.join("ok.safetensors"),
        Arch::ResNet18,
        7,
        Head::Replaceable,
    )
    .expect("replace head");
    // Another architecture's file: a ResNet-34 has every ResNet-18 tensor and more, named.
    let r34 = ResNet::random(&g, Arch::ResNet34, 10, 4).unwrap();
    let p = write("r34.safetensors", &r34.named());
    let err = ResNet::load(&g, &p, Arch::ResNet18, 10, Head::Required)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not use") && err.contains("layer1.2."),
        "{err}"
    );
    // Not a safetensors file.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let err = ResNet::load(&g, &bad, Arch::ResNet18, 10, Head::Required)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
}

#[test]
fn recomputed_batch_norm_statistics_are_the_mean_over_batches() {
    // Two batches of three random 20-px images; the stem's batch norm normalises conv1's
    // output, whose per-channel statistics the CPU reference gives.
    let mut net = ResNet::random(&gpu(), Arch::ResNet18, 10, 7).unwrap();
    let (n, s) = (3, 20);
    let images: Vec<Vec<f64>> = (0..2)
        .map(|i| Rng::new(40 + i).vec(n * 3 * s * s, -1.0, 2.0))
        .collect();
    let tensor = |net: &ResNet, name: &str| {
        net.named()
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("{name} in the state dict"))
            .1
            .to_vec()
            .unwrap()
    };
    let w: Vec<f64> = tensor(&net, "conv1.weight")
        .into_iter()
        .map(f64::from)
        .collect();
    // Per channel of conv1's output [n, 64, 10, 10]: mean and unbiased variance.
    let stats = |x: &[f64]| {
        let (y, shape) = reference::conv2d(x, [n, 3, s, s], &w, [64, 3, 7, 7], None, 2, 3);
        let (_, mean, var) = reference::batch_norm_train(&y, &shape, &[1.0; 64], &[0.0; 64], 1e-5);
        (mean, var)
    };
    let (s0, s1) = (stats(&images[0]), stats(&images[1]));
    let batches: Vec<Tensor> = images.iter().map(|x| upload(x, &[n, 3, s, s])).collect();
    net.recompute_batch_norm_statistics(&batches).unwrap();
    let want_mean: Vec<f64> = (0..64).map(|c| (s0.0[c] + s1.0[c]) / 2.0).collect();
    let want_var: Vec<f64> = (0..64).map(|c| (s0.1[c] + s1.1[c]) / 2.0).collect();
    let mean = tensor(&net, "bn1.running_mean");
    assert_close("bn1 running mean", &mean, &want_mean, 1e-5);
    assert_close(
        "bn1 running var",
        &tensor(&net, "bn1.running_var"),
        &want_var,
        1e-5,
    );
    // Every layer was re-estimated (the initial statistics are zeros and ones)...
    for (name, t) in net.named() {
        if name.ends_with("running_mean") {
            let v = t.to_vec().unwrap();
            assert!(
                v.iter().all(|a| a.is_finite()) && v.iter().any(|&a| a != 0.0),
                "{name}: {v:?}"
            );
        }
    }
    // ...and training mode blends with torch's momentum 0.1 again afterwards.
    no_grad(|| net.features(&batches[0], true)).unwrap();
    let blended: Vec<f64> = (0..64)
        .map(|c| 0.9 * f64::from(mean[c]) + 0.1 * s0.0[c])
        .collect();
    assert_close(
        "bn1 running mean after a training step",
        &tensor(&net, "bn1.running_mean"),
        &blended,
        1e-5,
    );
}
