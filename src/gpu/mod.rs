//! The device layer: adapter choice, the device, the buffer pool, the pipeline cache, batched
//! command recording, readback and the profiler. It knows nothing of tensors.
//!
//! Every kernel launch goes through [`Gpu::dispatch`]: dispatches are recorded into one command
//! encoder and submitted in batches; reading a buffer back flushes the batch.

mod adapter;
mod pipelines;
mod pool;
mod profiler;

pub use adapter::AdapterRequest;
pub use pipelines::{Access, Kernel, ShaderSource};
pub use pool::{PoolStats, PooledBuffer};
pub use profiler::{KernelEvent, KernelRow, Profile, SubmitEvent};

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use wgpu::util::DeviceExt;

/// Dispatches recorded before a batch is submitted on its own (also the timestamp capacity).
const MAX_BATCH_DISPATCHES: u32 = 512;
/// Bytes reserved for one dispatch's uniform parameters in the batch's parameter arena.
const PARAM_SLOT: u64 = 256;

/// llvmpipe (lavapipe) ends every loop of a shader invocation, silently, once all its loops
/// together have run this many iterations (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`, shared
/// between every loop): past it, results are wrong without any error. See [`Gpu::loop_budget`].
pub const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// How to open a device.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    pub adapter: AdapterRequest,
    /// Time every dispatch from the start (also `CONVIRT_PROFILE=1`).
    pub profile: bool,
    /// Fill every buffer the pool hands out with NaN, so an unwritten element shows (tests).
    pub poison: bool,
    /// Do not print the chosen adapter.
    pub quiet: bool,
    /// Bytes one temporary (im2col columns, ...) may take before an op splits its work; default
    /// the adapter's largest binding, at most 256 MiB.
    pub scratch_bytes: Option<u64>,
    /// Loop iterations one invocation may plan for (see [`Gpu::loop_budget`]); default 90% of
    /// [`LLVMPIPE_LOOP_LIMIT`] on CPU adapters, unlimited elsewhere. Tests set it to reach the
    /// split and the unsplit paths on any adapter.
    pub loop_budget: Option<usize>,
    /// Leave subgroup operations off even where the adapter has them (tests reach the
    /// portable kernels this way on any adapter).
    pub no_subgroups: bool,
}

impl GpuOptions {
    /// Options from the environment: `CONVIRT_BACKEND`, `CONVIRT_ADAPTER`, `CONVIRT_PROFILE`.
    pub fn from_env() -> Self {
        let profile = std::env::var("CONVIRT_PROFILE").is_ok_and(|v| v != "0" && !v.is_empty());
        GpuOptions {
            adapter: AdapterRequest::from_env(),
            profile,
            ..Default::default()
        }
    }
}

/// One kernel launch: which kernel, its parameters, its buffers, its grid and its cost.
pub struct Dispatch<'a> {
    pub kernel: Kernel<'a>,
    /// Name in the profile table, e.g. `gemm_nn` or `unary.gelu`.
    pub name: &'a str,
    /// Bytes of the uniform block at binding 0 (at most 256).
    pub params: &'a [u8],
    /// Storage buffers at bindings 1, 2, ... in order.
    pub buffers: &'a [(&'a wgpu::Buffer, Access)],
    pub workgroups: [u32; 3],
    /// Useful floating-point operations and bytes moved, for the profiler's GFLOP/s and GB/s.
    pub flops: u64,
    pub bytes: u64,
}

struct PendingKernel {
    name: String,
    flops: u64,
    bytes: u64,
}

struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    dispatches: u32,
    pending: Vec<PendingKernel>,
}

struct Timestamps {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

struct ProfileState {
    epoch: Instant,
    profile: Profile,
}

/// An open device with everything needed to run kernels on it.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    pool: Arc<pool::BufferPool>,
    pipelines: pipelines::PipelineCache,
    batch: Mutex<Batch>,
    param_arena: wgpu::Buffer,
    timestamps: Option<Timestamps>,
    profiling: AtomicBool,
    profile: Mutex<ProfileState>,
    poison: AtomicBool,
    scratch_bytes: u64,
    loop_budget: usize,
    dispatch_count: AtomicU64,
    submit_count: AtomicU64,
}

impl Gpu {
    /// The process-wide device, opened on first use from [`GpuOptions::from_env`].
    pub fn shared() -> Result<Arc<Gpu>> {
        static SHARED: OnceLock<std::result::Result<Arc<Gpu>, Error>> = OnceLock::new();
        SHARED
            .get_or_init(|| Gpu::new(GpuOptions::from_env()))
            .clone()
    }

    /// Opens a device on the adapter `opts` asks for (see [`AdapterRequest`]).
    pub fn new(opts: GpuOptions) -> Result<Arc<Gpu>> {
        let (_instance, adapter) = adapter::choose(&opts.adapter)?;
        let info = adapter.get_info();
        let mut features = adapter::wanted_features(&adapter);
        if opts.no_subgroups {
            features.remove(wgpu::Features::SUBGROUP);
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("convirt"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(format!("opening {}: {e}", adapter::describe(&info))))?;
        if !opts.quiet {
            eprintln!("convirt: using adapter {}", adapter::describe(&info));
        }
        let param_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("convirt params"),
            size: PARAM_SLOT * MAX_BATCH_DISPATCHES as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timestamps = features.contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            let count = 2 * MAX_BATCH_DISPATCHES;
            let bytes = 8 * count as u64;
            Timestamps {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("convirt timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("convirt timestamp resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("convirt timestamp readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: queue.get_timestamp_period() as f64,
            }
        });
        let gpu = Gpu {
            pool: pool::BufferPool::new(device.clone()),
            pipelines: Default::default(),
            batch: Mutex::new(Batch {
                encoder: None,
                params: Vec::new(),
                dispatches: 0,
                pending: Vec::new(),
            }),
            param_arena,
            timestamps,
            profiling: AtomicBool::new(opts.profile),
            profile: Mutex::new(ProfileState {
                epoch: Instant::now(),
                profile: Profile::default(),
            }),
            poison: AtomicBool::new(opts.poison),
            scratch_bytes: opts
                .scratch_bytes
                .unwrap_or(256 << 20)
                .min(limits.max_storage_buffer_binding_size),
            loop_budget: opts
                .loop_budget
                .unwrap_or(if info.device_type == wgpu::DeviceType::Cpu {
                    LLVMPIPE_LOOP_LIMIT / 10 * 9
                } else {
                    usize::MAX
                }),
            dispatch_count: AtomicU64::new(0),
            submit_count: AtomicU64::new(0),
            device,
            queue,
            info,
            features,
            limits,
        };
        Ok(Arc::new(gpu))
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One line: adapter name, backend, device type and driver.
    pub fn describe(&self) -> String {
        adapter::describe(&self.info)
    }

    /// The optional features enabled on this device (a subset of what we can use).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// True for software adapters (lavapipe, WARP, SwiftShader), whose best kernels differ.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The number of lanes in every subgroup, where subgroup operations are enabled and the
    /// adapter runs subgroups of one size only (llvmpipe: 8); kernels written for that size
    /// use it, the others run their portable form.
    pub fn subgroup_size(&self) -> Option<u32> {
        let (min, max) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        (self.features.contains(wgpu::Features::SUBGROUP) && min == max).then_some(min)
    }

    /// Loop iterations that one invocation of a kernel may run, all its loops together:
    /// 90% of [`LLVMPIPE_LOOP_LIMIT`] on CPU adapters (kernels whose loops grow with the
    /// problem split their work to stay under it), unlimited elsewhere, unless
    /// [`GpuOptions::loop_budget`] says otherwise.
    pub fn loop_budget(&self) -> usize {
        self.loop_budget
    }

    /// The largest buffer one storage binding can see, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Bytes one temporary may take before an op splits its work into chunks.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch_bytes
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn reset_pool_peak(&self) {
        self.pool.reset_peak()
    }

    /// Frees the pool's cached buffers (those not in use).
    pub fn trim_pool(&self) {
        self.pool.trim()
    }

    /// Number of distinct compiled pipelines (each compiled once).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.len()
    }

    /// Dispatches recorded and submissions made since the device opened.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.dispatch_count.load(Ordering::Relaxed),
            self.submit_count.load(Ordering::Relaxed),
        )
    }

    /// Turns NaN-poisoning of newly handed-out buffers on or off (for tests).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed)
    }

    /// A device buffer for `bytes` bytes from the pool; `op` and `shape` name the request in
    /// the error if the adapter cannot bind that much.
    pub fn alloc(&self, bytes: u64, op: &'static str, shape: &[usize]) -> Result<PooledBuffer> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                op,
                shape: shape.to_vec(),
                bytes,
                limit,
            });
        }
        let buf = self.pool.take(bytes, limit);
        if self.poison.load(Ordering::Relaxed) {
            // All-ones bytes are a NaN in f32 (and f16): unwritten output cannot pass a test.
            self.copy_in(buf.raw(), &vec![0xFF; buf.capacity() as usize]);
        }
        Ok(buf)
    }

    /// A new pooled buffer holding `data`.
    pub fn upload(&self, data: &[u8], op: &'static str, shape: &[usize]) -> Result<PooledBuffer> {
        let buf = self.alloc(data.len() as u64, op, shape)?;
        self.copy_in(buf.raw(), data);
        Ok(buf)
    }

    /// Writes `data` at the start of `dst`, in order with the recorded dispatches (through the
    /// encoder, not `queue.write_buffer`, which would run before commands already recorded).
    pub fn write(&self, dst: &wgpu::Buffer, data: &[u8]) {
        self.copy_in(dst, data)
    }

    fn copy_in(&self, dst: &wgpu::Buffer, data: &[u8]) {
        let len = (data.len() as u64) & !3;
        if len == 0 {
            return;
        }
        let staging = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("convirt upload"),
                contents: &data[..len as usize],
                usage: wgpu::BufferUsages::COPY_SRC,
            });
        let mut batch = self.lock_batch();
        self.encoder(&mut batch)
            .copy_buffer_to_buffer(&staging, 0, dst, 0, len);
    }

    /// Records a device-side copy of `bytes` bytes (multiples of 4) between buffers, in order
    /// with the dispatches around it.
    pub fn copy(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        if bytes == 0 {
            return;
        }
        let mut batch = self.lock_batch();
        self.encoder(&mut batch)
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    /// Reads the first `bytes` bytes of `buf` back to the host; flushes the batch.
    pub fn read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.div_ceil(4) * 4;
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("convirt readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut batch = self.lock_batch();
            self.encoder(&mut batch)
                .copy_buffer_to_buffer(buf, 0, &staging, 0, size);
            self.flush_locked(&mut batch)?;
        }
        let mut out = self.map_read(&staging, size)?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    fn map_read(&self, staging: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..size)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Device("readback callback never ran".into()))?
            .map_err(|e| Error::Device(format!("mapping a readback buffer: {e}")))?;
        let out = staging
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| Error::Device(format!("reading a mapped buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }

    /// Blocks until everything submitted so far has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))
    }

    /// Submits what has been recorded, and waits for it.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// Submits what has been recorded, without waiting.
    pub fn flush(&self) -> Result<()> {
        let mut batch = self.lock_batch();
        self.flush_locked(&mut batch)
    }

    /// Records one kernel launch into the current batch; the one dispatch path of the engine.
    pub fn dispatch(&self, d: &Dispatch) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if d.workgroups.iter().any(|&w| w > max) {
            return Err(Error::Invalid {
                op: "dispatch",
                why: format!(
                    "{}: grid {:?} exceeds {max} workgroups per dimension",
                    d.name, d.workgroups
                ),
            });
        }
        if d.workgroups.contains(&0) {
            return Ok(());
        }
        debug_assert!(d.params.len() as u64 <= PARAM_SLOT);
        let access: Vec<Access> = d.buffers.iter().map(|(_, a)| *a).collect();
        let cached = self.pipelines.get(&self.device, &d.kernel, &access);
        let profiling = self.profiling.load(Ordering::Relaxed);
        let wall_clock = profiling && self.timestamps.is_none();

        let mut batch = self.lock_batch();
        if batch.dispatches >= MAX_BATCH_DISPATCHES {
            self.flush_locked(&mut batch)?;
        }
        let offset = batch.params.len() as u64;
        batch.params.extend_from_slice(d.params);
        batch.params.resize((offset + PARAM_SLOT) as usize, 0);
        let params_size = (d.params.len() as u64).max(16).div_ceil(16) * 16;

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_arena,
                offset,
                size: wgpu::BufferSize::new(params_size),
            }),
        }];
        for (i, (buf, _)) in d.buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buf.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &cached.layout,
            entries: &entries,
        });
        let slot = batch.dispatches;
        let timestamp_writes = match (&self.timestamps, profiling) {
            (Some(ts), true) => Some(wgpu::ComputePassTimestampWrites {
                query_set: &ts.queries,
                beginning_of_pass_write_index: Some(2 * slot),
                end_of_pass_write_index: Some(2 * slot + 1),
            }),
            _ => None,
        };
        {
            let encoder = self.encoder(&mut batch);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(d.name),
                timestamp_writes,
            });
            pass.set_pipeline(&cached.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        }
        batch.dispatches += 1;
        self.dispatch_count.fetch_add(1, Ordering::Relaxed);
        if profiling {
            batch.pending.push(PendingKernel {
                name: d.name.to_string(),
                flops: d.flops,
                bytes: d.bytes,
            });
        }
        if wall_clock {
            self.flush_locked(&mut batch)?;
        }
        Ok(())
    }

    /// A grid of `n` workgroups folded into x and y so no dimension exceeds the limit; kernels
    /// recover the linear index as `wid.x + wid.y * nwg.x`.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            [n, 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    fn lock_batch(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn encoder<'b>(&self, batch: &'b mut Batch) -> &'b mut wgpu::CommandEncoder {
        batch.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("convirt batch"),
                })
        })
    }

    fn flush_locked(&self, batch: &mut Batch) -> Result<()> {
        let Some(mut encoder) = batch.encoder.take() else {
            return Ok(());
        };
        let n = batch.dispatches;
        let pending = std::mem::take(&mut batch.pending);
        let timed = self.timestamps.as_ref().filter(|_| !pending.is_empty());
        if let Some(ts) = timed {
            encoder.resolve_query_set(&ts.queries, 0..2 * n, &ts.resolve, 0);
            encoder.copy_buffer_to_buffer(&ts.resolve, 0, &ts.readback, 0, 16 * n as u64);
        }
        if !batch.params.is_empty() {
            self.queue.write_buffer(&self.param_arena, 0, &batch.params);
        }
        batch.params.clear();
        batch.dispatches = 0;
        let started = Instant::now();
        self.queue.submit([encoder.finish()]);
        let index = self.submit_count.fetch_add(1, Ordering::Relaxed);
        if pending.is_empty() {
            return Ok(());
        }
        // Profiling: wait for this submission and record its kernels.
        let ticks = match timed {
            Some(ts) => {
                let bytes = self.map_read(&ts.readback, 16 * n as u64)?;
                Some((
                    bytemuck::pod_collect_to_vec::<u8, u64>(&bytes),
                    ts.period_ns,
                ))
            }
            None => {
                self.wait()?;
                None
            }
        };
        let elapsed = started.elapsed().as_nanos() as f64;
        let mut st = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let submit_ns = started.duration_since(st.epoch).as_nanos() as f64;
        st.profile.submits.push(SubmitEvent {
            index,
            start_ns: submit_ns,
            dur_ns: elapsed,
            dispatches: pending.len() as u32,
        });
        let first = ticks.as_ref().map(|(t, _)| t[0]).unwrap_or(0);
        for (i, k) in pending.into_iter().enumerate() {
            let (start, dur) = match &ticks {
                Some((t, period)) => {
                    let (a, b) = (t[2 * i], t[2 * i + 1]);
                    (
                        a.saturating_sub(first) as f64 * period,
                        b.saturating_sub(a) as f64 * period,
                    )
                }
                None => (0.0, elapsed),
            };
            st.profile.kernels.push(KernelEvent {
                name: k.name,
                flops: k.flops,
                bytes: k.bytes,
                start_ns: submit_ns + start,
                dur_ns: dur,
                submission: index,
            });
        }
        Ok(())
    }

    /// Starts or stops recording kernel times; starting clears what was recorded.
    pub fn set_profiling(&self, on: bool) -> Result<()> {
        self.flush()?;
        if on {
            let mut st = self.profile.lock().unwrap_or_else(|e| e.into_inner());
            st.epoch = Instant::now();
            st.profile = Profile::default();
        }
        self.profiling.store(on, Ordering::Relaxed);
        Ok(())
    }

    pub fn is_profiling(&self) -> bool {
        self.profiling.load(Ordering::Relaxed)
    }

    /// What was recorded since profiling started (flushes pending work first).
    pub fn profile(&self) -> Result<Profile> {
        self.flush()?;
        let st = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = st.profile.clone();
        p.timer = if self.timestamps.is_some() {
            "GPU timestamps".into()
        } else {
            "wall clock, one submission per dispatch".into()
        };
        Ok(p)
    }

    /// For examples: when profiling is on, prints the table and writes the trace to
    /// `CONVIRT_TRACE` (default `convirt-trace.json`).
    pub fn report_profile(&self) -> Result<()> {
        if !self.is_profiling() {
            return Ok(());
        }
        let p = self.profile()?;
        eprintln!("{p}");
        let path = std::env::var("CONVIRT_TRACE").unwrap_or_else(|_| "convirt-trace.json".into());
        std::fs::write(&path, p.trace_json()).map_err(|e| Error::Invalid {
            op: "profile",
            why: format!("writing {path}: {e}"),
        })?;
        eprintln!(
            "trace written to {path} (open it in https://ui.perfetto.dev or chrome://tracing)"
        );
        Ok(())
    }
}
