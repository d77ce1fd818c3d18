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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// The byte budget of the key actors: when the heap goes above its high mark, shards passivate
/// their least recently used keys until it is below the low mark.
///
/// The marks start at two thirds and five eighths of `max_memory` (the rest covers thread
/// stacks, the program's code and the allocator's fragmentation) and follow the resident
/// size: glibc's fragmentation under a long key churn grows the resident size to 1.3–1.6 × the
/// heap, so a fixed fraction of the limit cannot hold the process within it. Every
/// [`Budget::tick`] (twice a second) compares the resident size with the limit: above
/// [`RSS_HIGH`] of it the high mark is scaled down in proportion (never below a quarter of the
/// limit) and the allocator is asked to return its free pages; below [`RSS_LOW`] it climbs
/// back by 1/64 of the limit per tick towards its start. Freed chunks are reused for new keys,
/// so a lower heap mark stops the resident size from growing.
///
/// Clones share their marks: one budget per process (the heap counter is process-wide).
#[derive(Debug, Clone)]
pub struct Budget {
    marks: Arc<Marks>,
}

/// Above this share of the limit, the resident size makes the heap mark go down.
pub const RSS_HIGH: f64 = 0.85;
/// Below this share, the heap mark climbs back.
pub const RSS_LOW: f64 = 0.75;
/// [`Budget::tick`] does its work at most this often, however many shards call it.
pub const TICK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug)]
struct Marks {
    limit: usize,
    /// The high mark it starts from and climbs back to.
    start: usize,
    /// The lowest the high mark goes.
    floor: usize,
    /// Passivation starts above this many heap bytes; stops at `high - gap`.
    high: AtomicUsize,
    gap: usize,
    /// Milliseconds since `epoch` of the last tick that did its work.
    last_tick_ms: AtomicU64,
    epoch: Instant,
}

impl Budget {
    /// The budget for a `max_memory` limit on the process.
    pub fn for_limit(max_memory: u64) -> Budget {
        let limit = usize::try_from(max_memory).unwrap_or(usize::MAX);
        let start = limit / 3 * 2;
        Budget {
            marks: Arc::new(Marks {
                limit,
                start,
                floor: limit / 4,
                high: AtomicUsize::new(start),
                gap: limit / 24,
                last_tick_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// Passivation starts above this many heap bytes.
    pub fn high(&self) -> usize {
        self.marks.high.load(Ordering::Relaxed)
    }

    /// And stops at this many.
    pub fn low(&self) -> usize {
        self.high().saturating_sub(self.marks.gap)
    }

    /// Whether the heap is above the budget now (never without the counting allocator).
    #[inline]
    pub fn exceeded(&self) -> bool {
        heap_bytes().is_some_and(|bytes| bytes > self.high())
    }

    /// Whether the heap is still above the low mark (passivation goes on).
    #[inline]
    pub fn still_above_low(&self) -> bool {
        heap_bytes().is_some_and(|bytes| bytes > self.low())
    }

    /// Follow the resident size (see [`Budget`]); called by every shard's timer, does its work
    /// at most every [`TICK_EVERY`]. Nothing happens without the counting allocator.
    pub fn tick(&self) {
        if heap_bytes().is_none() {
            return;
        }
        let m = &self.marks;
        let now = u64::try_from(m.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = m.last_tick_ms.load(Ordering::Relaxed);
        let every = TICK_EVERY.as_millis() as u64;
        if now.saturating_sub(last) < every
            || m.last_tick_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Some(rss) = resident_bytes() else {
            return;
        };
        let (high, trim) = self.next_high(usize::try_from(rss).unwrap_or(usize::MAX));
        m.high.store(high, Ordering::Relaxed);
        if trim {
            release_free_memory();
        }
    }

    /// The high mark after a tick that measured `rss`, and whether to return free pages.
    fn next_high(&self, rss: usize) -> (usize, bool) {
        let m = &self.marks;
        let high = self.high();
        let limit = m.limit as f64;
        let rss_f = rss as f64;
        if rss_f > limit * RSS_HIGH {
            // In proportion: the resident size is about a constant multiple of the heap.
            let scaled = (high as f64 * (limit * RSS_HIGH) / rss_f) as usize;
            (scaled.clamp(m.floor, high), true)
        } else if rss_f < limit * RSS_LOW && high < m.start {
            ((high + m.limit / 64).min(m.start), false)
        } else {
            (high, false)
        }
    }
}

/// Ask glibc to return the free pages of its arenas to the kernel (`malloc_trim(0)`), after
/// the heap mark went down: the chunks passivation freed are then no longer resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: `malloc_trim` only returns free memory of the allocator to the kernel; it
        // takes the arenas' locks itself.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_what_the_heap_does_not_count() {
        let b = Budget::for_limit(200 << 20);
        assert_eq!(b.high(), (200 << 20) / 3 * 2);
        assert!(b.low() < b.high());
        assert!(b.low() > (200 << 20) / 2);
    }

    #[test]
    fn the_heap_mark_follows_the_resident_size() {
        let limit = 192usize << 20;
        let b = Budget::for_limit(limit as u64);
        let start = b.high();
        // Within the limit: nothing moves.
        assert_eq!(b.next_high(limit / 2), (start, false));
        // 1.5 × the heap mark resident, above the limit: the mark goes down in proportion
        // so that the same ratio lands on RSS_HIGH of the limit, and free pages are returned.
        let rss = start * 3 / 2;
        let (high, trim) = b.next_high(rss);
        assert!(trim);
        let expected = start as f64 * limit as f64 * RSS_HIGH / rss as f64;
        assert!((high as f64 - expected).abs() < 2.0, "{high} vs {expected}");
        b.marks.high.store(high, Ordering::Relaxed);
        assert!(b.low() < high);
        // Far above: never below a quarter of the limit.
        assert_eq!(b.next_high(limit * 100), (limit / 4, true));
        // Back under RSS_LOW: it climbs by 1/64 of the limit per tick, up to where it started.
        let (up, trim) = b.next_high(limit / 2);
        assert_eq!((up, trim), (high + limit / 64, false));
        b.marks.high.store(start - 1, Ordering::Relaxed);
        assert_eq!(b.next_high(limit / 2), (start, false));
        // Between RSS_LOW and RSS_HIGH: it holds.
        b.marks.high.store(high, Ordering::Relaxed);
        assert_eq!(b.next_high((limit as f64 * 0.8) as usize), (high, false));
    }

    #[test]
    fn clones_share_their_marks() {
        let a = Budget::for_limit(64 << 20);
        let b = a.clone();
        a.marks.high.store(1234, Ordering::Relaxed);
        assert_eq!(b.high(), 1234);
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
