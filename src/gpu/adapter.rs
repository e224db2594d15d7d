//! Adapter choice: an explicit request by environment variable, else the most capable device.

use crate::error::{Error, Result};

/// How to pick an adapter. `Default` reads `CONVIRT_BACKEND` and `CONVIRT_ADAPTER`.
#[derive(Debug, Clone, Default)]
pub struct AdapterRequest {
    /// `vulkan`, `metal`, `dx12` or `gl`; `None` allows all of them.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name (e.g. `llvmpipe`, `nvidia`).
    pub name: Option<String>,
}

impl AdapterRequest {
    /// The request made by the environment: `CONVIRT_BACKEND` and `CONVIRT_ADAPTER`.
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        AdapterRequest {
            backend: get("CONVIRT_BACKEND"),
            name: get("CONVIRT_ADAPTER"),
        }
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        let Some(b) = &self.backend else {
            return Ok(wgpu::Backends::VULKAN
                | wgpu::Backends::METAL
                | wgpu::Backends::DX12
                | wgpu::Backends::GL);
        };
        match b.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
            "metal" | "mtl" => Ok(wgpu::Backends::METAL),
            "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
            "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
            other => Err(Error::NoAdapter(format!(
                "CONVIRT_BACKEND={other:?} is not a backend; use vulkan, metal, dx12 or gl"
            ))),
        }
    }
}

/// Discrete first, then integrated, virtual, software: the order a user would expect.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Backends of equal device type: native APIs before GL, whose compute is the most limited.
fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

const HOW_TO_FIX: &str = "install a Vulkan, Metal or DX12 driver for your GPU; on a machine \
without a GPU (Debian/Ubuntu) Mesa's software Vulkan driver works: \
`apt-get install mesa-vulkan-drivers`";

/// Enumerates adapters and picks one as `req` says.
pub(crate) fn choose(req: &AdapterRequest) -> Result<(wgpu::Instance, wgpu::Adapter)> {
    let backends = req.backends()?;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    if adapters.is_empty() {
        let which = req
            .backend
            .as_deref()
            .unwrap_or("Vulkan, Metal, DX12 or GL");
        return Err(Error::NoAdapter(format!(
            "no {which} adapter was found; {HOW_TO_FIX}"
        )));
    }
    let names: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?})", i.name, i.backend)
        })
        .collect();
    if let Some(want) = &req.name {
        let want = want.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "CONVIRT_ADAPTER={want:?} matches none of the adapters found: {}",
                names.join(", ")
            )));
        }
    }
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        (preference(i.device_type), backend_rank(i.backend))
    });
    let adapter = adapters.swap_remove(0);
    Ok((instance, adapter))
}

/// The optional features we use, where the adapter has them.
pub(crate) fn wanted_features(adapter: &wgpu::Adapter) -> wgpu::Features {
    let wanted = wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_FLOAT32_ATOMIC;
    adapter.features() & wanted
}

/// One line for the user: which adapter, which backend, which driver.
pub(crate) fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
        (true, true) => "unknown driver".to_string(),
        (false, true) => info.driver.clone(),
        (true, false) => info.driver_info.clone(),
        (false, false) => format!("{} {}", info.driver, info.driver_info),
    };
    format!(
        "\"{}\" ({:?}, {:?}, driver: {driver})",
        info.name, info.backend, info.device_type
    )
}
