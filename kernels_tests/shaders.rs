//! Portability: every shader the engine compiles is parsed and validated by naga and written
//! as SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL), with its override constants
//! applied. This is how Metal and DX12 are covered on a machine that has neither.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn translate(name: &str, wgsl: &str) {
    // The capabilities every backend has: nothing optional.
    translate_with(name, wgsl, Capabilities::empty());
}

/// `translate` for shaders that need `caps`. Subgroup operations exist in SPIR-V, MSL, HLSL
/// (shader model 6) and GLSL (GL_KHR_shader_subgroup), so all four are still written.
fn translate_with(name: &str, wgsl: &str, caps: Capabilities) {
    let module = naga::front::wgsl::parse_str(wgsl)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(wgsl)));
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: invalid: {e:?}"));
    for ep in &module.entry_points {
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((ep.stage, &ep.name)),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{name}/{}: overrides: {e:?}", ep.name));
        let what = format!("{name}/{}", ep.name);
        let spv_pipeline = spv::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
        };
        let words = spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv_pipeline),
        )
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e:?}"));
        assert!(
            words.len() > 5 && words[0] == 0x0723_0203,
            "{what}: SPIR-V magic"
        );
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
            ..Default::default()
        };
        let (metal, _) = msl::write_string(&module, &info, &msl::Options::default(), &msl_pipeline)
            .unwrap_or_else(|e| panic!("{what}: MSL: {e:?}"));
        assert!(metal.contains("kernel void"), "{what}: MSL has no kernel");
        let mut hlsl_out = String::new();
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
        };
        hlsl::Writer::new(&mut hlsl_out, &hlsl::Options::default(), &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{what}: HLSL: {e:?}"));
        assert!(
            hlsl_out.contains("[numthreads("),
            "{what}: HLSL has no compute entry"
        );
        let mut glsl_out = String::new();
        let glsl_pipeline = glsl::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
            multiview: None,
        };
        glsl::Writer::new(
            &mut glsl_out,
            &module,
            &info,
            &glsl::Options::default(),
            &glsl_pipeline,
            Default::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{what}: GLSL ES 3.1: {e:?}"));
    }
}

#[test]
fn every_shader_validates_and_translates_to_spirv_msl_hlsl_glsl() {
    let mut all = convirt::ops::all_shaders();
    for s in &all {
        translate(s.name, s.wgsl);
    }
    let subgroup = convirt::ops::subgroup_shaders();
    for s in &subgroup {
        translate_with(s.name, s.wgsl, Capabilities::SUBGROUP);
    }
    all.extend(subgroup);
    // Every kernel file in shaders/ is compiled by some op (generated variants carry the
    // file's name as a prefix), so nothing there escapes the checks above.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).expect("shaders/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(
                all.iter().any(|s| s.name.starts_with(&stem)),
                "shaders/{stem}.wgsl is compiled by no op"
            );
        }
    }
}

#[test]
fn the_gemm_template_is_itself_valid_wgsl() {
    // As written (1 x 1 block), with the shared snippets it is compiled with.
    let template = include_str!("../shaders/gemm.wgsl");
    let erf = include_str!("../shaders/common/erf.wgsl");
    let mac = include_str!("../shaders/common/mac.wgsl");
    translate("gemm template", &format!("{template}{erf}{mac}"));
}
