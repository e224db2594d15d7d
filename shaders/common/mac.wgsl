// Block multiply-accumulate for the register-blocked kernels (gemm, attention): appended by
// the host to the shaders that use it.

// acc + b a, one multiply-add at a time into the accumulator. Where a GPU fuses them this is
// one FMA per term; llvmpipe (Mesa 22.3) splits fma() into a multiply and an add, but the
// order still pays there: `acc += b * a` built the whole 4x4 product in temporaries first, and
// the big tiling ran at about 60 GFLOP/s against 64 for this form (BERT shapes, lavapipe,
// alternating runs).
fn mac(acc: mat4x4<f32>, b: mat4x4<f32>, a: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma(b[3], vec4<f32>(a[0].w), fma(b[2], vec4<f32>(a[0].z), fma(b[1], vec4<f32>(a[0].y), fma(b[0], vec4<f32>(a[0].x), acc[0])))),
        fma(b[3], vec4<f32>(a[1].w), fma(b[2], vec4<f32>(a[1].z), fma(b[1], vec4<f32>(a[1].y), fma(b[0], vec4<f32>(a[1].x), acc[1])))),
        fma(b[3], vec4<f32>(a[2].w), fma(b[2], vec4<f32>(a[2].z), fma(b[1], vec4<f32>(a[2].y), fma(b[0], vec4<f32>(a[2].x), acc[2])))),
        fma(b[3], vec4<f32>(a[3].w), fma(b[2], vec4<f32>(a[3].z), fma(b[1], vec4<f32>(a[3].y), fma(b[0], vec4<f32>(a[3].x), acc[3])))));
}
