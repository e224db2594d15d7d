//! Adam against the f64 reference of torch.optim.Adam's update, and clip_grad_norm against
//! torch.nn.utils.clip_grad_norm_'s rule.

use crate::common::*;
use convirt::ops::adam::{clip_grad_norm, Adam};
use convirt::{reference, Error, Tensor};

/// Gives each parameter the gradient `grads[i]` (through backward of sum(p * g)), or none.
fn set_grads(params: &[Tensor], grads: &[Option<Vec<f64>>]) {
    let mut loss: Option<Tensor> = None;
    for (p, g) in params.iter().zip(grads) {
        p.zero_grad();
        let Some(g) = g else { continue };
        let term = p.mul(&upload(g, p.shape())).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    if let Some(l) = loss {
        l.backward().unwrap();
    }
}

#[test]
fn adam_matches_reference_over_three_steps() {
    let shapes: [&[usize]; 4] = [&[1], &[7], &[10, 100], &[3, 5]];
    for wd in [0.0, 0.05] {
        let lr = 1e-2;
        let mut rng = Rng::new(17);
        let mut want: Vec<Vec<f64>> = shapes
            .iter()
            .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
            .collect();
        let params: Vec<Tensor> = want
            .iter()
            .zip(shapes)
            .map(|(d, s)| Tensor::param(&gpu(), &to_f32(d), s).unwrap())
            .collect();
        let mut adam = Adam::new(&params, lr as f32, wd as f32).unwrap();
        let mut m: Vec<Vec<f64>> = want.iter().map(|d| vec![0.0; d.len()]).collect();
        let mut v = m.clone();
        for t in 1..=3u64 {
            // The last parameter never has a gradient: untouched, moments still zero.
            let grads: Vec<Option<Vec<f64>>> = want
                .iter()
                .enumerate()
                .map(|(i, d)| (i + 1 < shapes.len()).then(|| rng.vec(d.len(), -2.0, 2.0)))
                .collect();
            set_grads(&params, &grads);
            adam.step(&params).unwrap();
            for (i, g) in grads.iter().enumerate() {
                if let Some(g) = g {
                    reference::adam_step(
                        &mut want[i],
                        g,
                        &mut m[i],
                        &mut v[i],
                        t,
                        lr,
                        0.9,
                        0.999,
                        1e-8,
                        wd,
                    );
                }
            }
            let moments = adam.moments();
            for i in 0..shapes.len() {
                let what = format!("adam wd={wd} step {t} param {i} {:?}", shapes[i]);
                assert_close(&what, &params[i].to_vec().unwrap(), &want[i], 1e-6);
                assert_close(
                    &format!("{what} m"),
                    &moments[i].0.to_vec().unwrap(),
                    &m[i],
                    1e-6,
                );
                assert_close(
                    &format!("{what} v"),
                    &moments[i].1.to_vec().unwrap(),
                    &v[i],
                    1e-6,
                );
            }
        }
        assert_eq!(adam.steps(), 3);
        // The gradient-free parameter kept its exact values.
        let last = shapes.len() - 1;
        assert_eq!(params[last].to_vec().unwrap(), to_f32(&want[last]));
    }
}

#[test]
fn adam_learning_rate_and_restore() {
    let mut rng = Rng::new(3);
    let data = rng.vec(33, -1.0, 1.0);
    let grads: Vec<Vec<f64>> = (0..4).map(|_| rng.vec(33, -1.0, 1.0)).collect();
    let a = Tensor::param(&gpu(), &to_f32(&data), &[3, 11]).unwrap();
    let b = Tensor::param(&gpu(), &to_f32(&data), &[3, 11]).unwrap();
    let (pa, pb) = ([a.clone()], [b.clone()]);
    let mut adam_a = Adam::new(&pa, 1e-3, 0.0).unwrap();
    adam_a.set_lr(5e-3);
    assert_eq!(adam_a.lr(), 5e-3);
    for g in &grads[..2] {
        set_grads(&pa, &[Some(g.clone())]);
        adam_a.step(&pa).unwrap();
    }
    // A second optimiser resumes from a copy of the first one's state, on a copy of the
    // parameter: the next two steps must agree exactly.
    let (step, moments) = adam_a.state();
    assert_eq!(step, 2);
    b.write(&a.to_vec().unwrap()).unwrap();
    let copies: Vec<(Tensor, Tensor)> = moments
        .iter()
        .map(|(m, v)| {
            (
                Tensor::from_slice(&gpu(), &m.to_vec().unwrap(), m.shape()).unwrap(),
                Tensor::from_slice(&gpu(), &v.to_vec().unwrap(), v.shape()).unwrap(),
            )
        })
        .collect();
    let mut adam_b = Adam::new(&pb, 5e-3, 0.0).unwrap();
    adam_b.restore(step, copies).unwrap();
    for g in &grads[2..] {
        set_grads(&pa, &[Some(g.clone())]);
        adam_a.step(&pa).unwrap();
        set_grads(&pb, &[Some(g.clone())]);
        adam_b.step(&pb).unwrap();
    }
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());

    // Restores that do not fit.
    let wrong = Tensor::zeros(&gpu(), &[33]).unwrap();
    assert!(matches!(
        adam_b.restore(1, vec![(wrong.clone(), wrong)]),
        Err(Error::Shape {
            op: "Adam::restore",
            ..
        })
    ));
    assert!(matches!(
        adam_b.restore(1, vec![]),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(adam_b.step(&[]), Err(Error::Invalid { .. })));
    assert!(matches!(
        Adam::new(&pa, -1.0, 0.0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        Adam::new(&pa, 1e-3, f32::NAN),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn clip_grad_norm_scales_like_torch() {
    let mut rng = Rng::new(8);
    let shapes: [&[usize]; 3] = [&[5], &[1000], &[2, 3]];
    let grads: Vec<Vec<f64>> = shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
        .collect();
    let norm: f64 = grads.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::param(&gpu(), &vec![0.5; s.iter().product()], s).unwrap())
        .collect();
    // A fourth parameter without a gradient is skipped.
    let idle = Tensor::param(&gpu(), &[1.0; 4], &[4]).unwrap();
    let mut all = params.clone();
    all.push(idle.clone());
    let mut with_none: Vec<Option<Vec<f64>>> = grads.iter().cloned().map(Some).collect();
    with_none.push(None);

    // Under the limit: the norm is returned, the gradients are untouched.
    set_grads(&all, &with_none);
    let got = clip_grad_norm(&all, (norm * 2.0) as f32).unwrap();
    assert_close("norm", &[got], &[norm], 1e-6);
    for (p, g) in params.iter().zip(&grads) {
        assert_eq!(p.grad().unwrap().to_vec().unwrap(), to_f32(g));
    }
    // Over it: every gradient scaled by max / (norm + 1e-6).
    let max = 0.25;
    let got = clip_grad_norm(&all, max as f32).unwrap();
    assert_close("norm", &[got], &[norm], 1e-6);
    let coef = max / (norm + 1e-6);
    for (p, g) in params.iter().zip(&grads) {
        let want: Vec<f64> = g.iter().map(|x| x * coef).collect();
        assert_close("clipped", &p.grad().unwrap().to_vec().unwrap(), &want, 1e-6);
    }
    assert!(idle.grad().is_none());
    assert_eq!(clip_grad_norm(&[idle], 1.0).unwrap(), 0.0);
    assert!(matches!(
        clip_grad_norm(&all, -1.0),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn clip_grad_norm_shared_gradient_buffers() {
    // add's backward hands one gradient tensor to both operands: each must be scaled once.
    let a = Tensor::param(&gpu(), &[1.0, 2.0], &[2]).unwrap();
    let b = Tensor::param(&gpu(), &[3.0, 4.0], &[2]).unwrap();
    let w = Tensor::from_slice(&gpu(), &[3.0, 4.0], &[2]).unwrap();
    a.add(&b)
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let norm = clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
    let want_norm = (2.0f64 * 25.0).sqrt();
    assert_close("shared norm", &[norm], &[want_norm], 1e-6);
    let coef = 1.0 / (want_norm + 1e-6);
    for t in [a, b] {
        assert_close(
            "shared clipped",
            &t.grad().unwrap().to_vec().unwrap(),
            &[3.0 * coef, 4.0 * coef],
            1e-6,
        );
    }
}
