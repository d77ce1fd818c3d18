//! What the process holds on its heap, so passivation can keep memory within a byte budget
//! (`[runtime] max_memory`) instead of a key count.
//!
//! The `edgeflow` binary installs [`CountingAllocator`] as its global allocator: the system
//! allocator plus one relaxed atomic add per allocation and one subtraction per free. Every
//! byte counts — key states, sled's page cache and dirty pages, queues, buffers — so the budget
//! holds whatever the keys' models cost, which a per-key estimate could not promise (a forecast
//! key is ~4 KB, a recommender user or a k-means profile is not). Measured under load
//! (BENCHMARKS.md, "memory budget"): no difference within the noise of the daemon benchmark,
//! where the hot path allocates a few times per reading.
//!
//! Code that runs without the counting allocator (unit tests, the library in other programs)
//! sees [`heap_bytes`] return `None`, and the budget is not enforced.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bytes allocated and not yet freed, through [`CountingAllocator`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Set by the first allocation through [`CountingAllocator`].
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes it holds for the program. Install it with
/// `#[global_allocator] static ALLOC: edgeflow::memory::CountingAllocator = CountingAllocator;`.
pub struct CountingAllocator;

impl CountingAllocator {
    #[inline]
    fn grew(size: usize) {
        LIVE.fetch_add(size, Ordering::Relaxed);
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counter is a
// side effect that never touches the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Counted BEFORE the call, and taken back on failure: with the count after it, the
        // atomic between `malloc` and the caller's zero-fill keeps LLVM from folding the two
        // into one `calloc`, and the zeros are then written page by page. sled allocates 41
        // histograms of 512 KiB at open this way (`vec` of atomics set to 0) and never touches
        // them: with `calloc` they cost no resident memory, written they cost 20 MB of RSS
        // (measured: 30.8 against 9.3 MB at start with the count after the call).
        Self::grew(layout.size());
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

/// Bytes on the heap now, or `None` when the program does not use [`CountingAllocator`].
pub fn heap_bytes() -> Option<usize> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed))
}

/// The process's resident set size in bytes (Linux `/proc/self/statm`), for metrics and
/// benchmarks; `None` where it cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // 4 KiB on x86-64 and most ARM boards; 16/64 KiB kernels exist on arm64. `AT_PAGESZ`
    // needs libc, which this crate does not otherwise use: read the page size of the first
    // mapping from smaps, once.
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/smaps")
            .ok()
            .and_then(|smaps| {
                smaps
                    .lines()
                    .find_map(|line| line.strip_prefix("KernelPageSize:"))
                    .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(4096, |kb| kb * 1024)
    })
}

/// Limit glibc's malloc to two arenas. By default it creates up to 8 per core as threads
/// contend, and memory freed in one arena is not reused by another: under key churn (states
/// allocated and freed by the shards, sled's pages by its threads) the resident size grew to
/// 1.4–1.9 × the heap with the default, 1.25–1.35 × with two arenas and 1.15–1.2 × with one
/// (BENCHMARKS.md, "memory budget"); two keep the shards from contending on one lock. Call it
/// first thing in `main`, before any thread starts. `MALLOC_ARENA_MAX` in the environment
/// still wins (glibc reads it at the first allocation, and this does not override it then).
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_ARENA_MAX: i32 = -8;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: `mallopt` only sets an allocator parameter; called before other threads
            // exist, nothing allocates concurrently.
            unsafe {
                mallopt(M_ARENA_MAX, 2);
            }
        }
    }
}

/// The byte budget of the key actors: when the heap goes above `high`, shards passivate their
/// least recently used keys until it is below `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Passivation starts above this many heap bytes.
    pub high: usize,
    /// And stops at this many.
    pub low: usize,
}

impl Budget {
    /// The budget for a `max_memory` limit on the process: the heap may use two thirds of it
    /// (the rest covers the allocator's fragmentation — the resident size measured at up to
    /// 1.35 × the heap under key churn with [`limit_allocator_arenas`] — thread stacks and the
    /// program's code), and passivation frees 1/24 of it at a time, so it runs in bursts
    /// rather than per reading.
    pub fn for_limit(max_memory: u64) -> Budget {
        let limit = usize::try_from(max_memory).unwrap_or(usize::MAX);
        Budget {
            high: limit / 3 * 2,
            low: limit / 24 * 15,
        }
    }

    /// Whether the heap is above the budget now (never without the counting allocator).
    #[inline]
    pub fn exceeded(&self) -> bool {
        heap_bytes().is_some_and(|bytes| bytes > self.high)
    }

    /// Whether the heap is still above the low mark (passivation goes on).
    #[inline]
    pub fn still_above_low(&self) -> bool {
        heap_bytes().is_some_and(|bytes| bytes > self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_what_the_heap_does_not_count() {
        let b = Budget::for_limit(200 << 20);
        assert_eq!(b.high, (200 << 20) / 3 * 2);
        assert!(b.low < b.high);
        assert!(b.low > (200 << 20) / 2);
    }

    #[test]
    fn without_the_counting_allocator_nothing_is_enforced() {
        // The test harness uses the system allocator.
        assert_eq!(heap_bytes(), None);
        assert!(!Budget::for_limit(1).exceeded());
    }

    #[test]
    fn resident_size_is_read() {
        let rss = resident_bytes().expect("Linux /proc");
        assert!(rss > 1 << 20, "{rss}");
    }
}
