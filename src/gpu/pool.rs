//! The one place that owns device buffers: storage buffers are recycled by size class, so a
//! training loop that allocates the same shapes every step stops allocating after step one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes in use and allocated, as the pool sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of all device buffers the pool has created and not destroyed (in use + cached).
    pub allocated_bytes: u64,
    /// Bytes handed out and not yet returned.
    pub in_use_bytes: u64,
    /// Highest `in_use_bytes` seen since the last `reset_peak`.
    pub peak_in_use_bytes: u64,
    /// Device buffers created so far (a count that stops growing in a steady loop).
    pub buffers_created: u64,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

pub(crate) struct BufferPool {
    device: wgpu::Device,
    state: Mutex<PoolState>,
}

/// Size classes a few percent apart: 256 B, then eight steps per power of two (at most 12.5%
/// wasted), so slightly different sizes still share buffers.
pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= 256 {
        return 256;
    }
    let step = (bytes.next_power_of_two() / 8).max(256);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Arc<Self> {
        Arc::new(BufferPool {
            device,
            state: Mutex::new(PoolState::default()),
        })
    }

    /// A storage buffer of at least `bytes` (never more than `limit`), reused when one is free.
    pub fn take(self: &Arc<Self>, bytes: u64, limit: u64) -> PooledBuffer {
        // Whole 16-byte groups, so vec4 kernels may run over a tensor's tail.
        let class = size_class(bytes).min(limit.max(bytes)).next_multiple_of(16);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = match st.free.get_mut(&class).and_then(Vec::pop) {
            Some(b) => b,
            None => {
                st.stats.allocated_bytes += class;
                st.stats.buffers_created += 1;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("convirt pooled"),
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        st.stats.in_use_bytes += class;
        st.stats.peak_in_use_bytes = st.stats.peak_in_use_bytes.max(st.stats.in_use_bytes);
        PooledBuffer {
            buffer: Some(buffer),
            class,
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, buffer: wgpu::Buffer, class: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.stats.in_use_bytes -= class;
        st.free.entry(class).or_default().push(buffer);
    }

    pub fn stats(&self) -> PoolStats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    pub fn reset_peak(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.stats.peak_in_use_bytes = st.stats.in_use_bytes;
    }

    /// Destroys the cached (free) buffers, e.g. between phases with different shapes.
    pub fn trim(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let freed: u64 = st.free.iter().map(|(c, v)| c * v.len() as u64).sum();
        st.free.clear();
        st.stats.allocated_bytes -= freed;
    }
}

/// A device buffer borrowed from the pool; it goes back when dropped. Commands already recorded
/// on it stay valid: the queue runs them before any later reuse.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("pooled buffer present until drop")
    }

    /// Capacity in bytes (the size class, at least what was asked).
    pub fn capacity(&self) -> u64 {
        self.class
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give_back(b, self.class);
        }
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({} B)", self.class)
    }
}
