//! The one pipeline cache: each WGSL module + entry point + override constants is compiled
//! once per process (per device), then shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A WGSL file of `shaders/`, embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderSource {
    /// The file's stem, e.g. `gemm` for `shaders/gemm.wgsl`.
    pub name: &'static str,
    pub wgsl: &'static str,
}

/// One compute entry point of a shader, specialised by override constants.
#[derive(Debug, Clone, Copy)]
pub struct Kernel<'a> {
    pub shader: ShaderSource,
    pub entry: &'static str,
    /// `(name, value)` of WGSL `override` constants; values are cast to the constant's type.
    pub overrides: &'a [(&'static str, f64)],
}

/// How a storage binding is used, which fixes its bind group layout entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

#[derive(PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    overrides: Vec<(&'static str, u64)>,
    layout: Vec<Access>,
}

pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
    layouts: Mutex<HashMap<Vec<Access>, wgpu::BindGroupLayout>>,
}

impl PipelineCache {
    /// Layout: binding 0 is the uniform parameter block, bindings 1.. the storage buffers.
    fn layout(&self, device: &wgpu::Device, access: &[Access]) -> wgpu::BindGroupLayout {
        let mut layouts = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
        layouts
            .entry(access.to_vec())
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for (i, a) in access.iter().enumerate() {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: i as u32 + 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: *a == Access::Read,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("convirt layout"),
                    entries: &entries,
                })
            })
            .clone()
    }

    pub fn get(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        access: &[Access],
    ) -> Arc<CachedPipeline> {
        let key = PipelineKey {
            shader: kernel.shader.name,
            entry: kernel.entry,
            overrides: kernel
                .overrides
                .iter()
                .map(|(k, v)| (*k, v.to_bits()))
                .collect(),
            layout: access.to_vec(),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(p);
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            modules
                .entry(kernel.shader.name)
                .or_insert_with(|| {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.shader.name),
                        source: wgpu::ShaderSource::Wgsl(kernel.shader.wgsl.into()),
                    })
                })
                .clone()
        };
        let layout = self.layout(device, access);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: kernel.overrides,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let cached = Arc::new(CachedPipeline { pipeline, layout });
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&cached));
        cached
    }

    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
