
// Shared by gemm.wgsl and elementwise.wgsl: the host appends this file to both.
// Numerical Recipes' erfcc: fractional error below 1.2e-7 for every x, so GELU keeps its
// relative accuracy in the far negative tail too.
fn erfc_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(2.0 - r, r, x >= 0.0);
}

// GELU, erf form: x * Phi(x) = 0.5 x erfc(-x / sqrt 2).
fn gelu(x: f32) -> f32 {
    return 0.5 * x * erfc_approx(-x * 0.70710678118654752);
}

// d GELU / dx = Phi(x) + x phi(x).
fn gelu_grad(x: f32) -> f32 {
    return 0.5 * erfc_approx(-x * 0.70710678118654752) + x * 0.39894228040143268 * exp(-0.5 * x * x);
}
