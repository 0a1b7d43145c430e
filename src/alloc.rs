//! The allocator of the whole process: mimalloc, for Rust's allocations and librdkafka's alike.
//!
//! Why mimalloc: draining the end-to-end benchmark's larger backlog, glibc's malloc and free were
//! ~15% of the connector's samples (see the commit that made the switch). The connector, its tests
//! and its benchmarks all link this library, so they measure what it runs with.
//!
//! Why librdkafka's C allocations too (libmimalloc-sys's `override`, which defines `malloc` and
//! `free` in the executable): every message the pipeline thread produces is allocated there and
//! freed by librdkafka's broker thread once delivered, and every fetched message the other way
//! round. glibc serves a block freed by another thread through the owner arena's lock: in a drain
//! profile, its `_int_malloc`, `_int_free` and the futex wake-ups of that lock were ~5% of the
//! pipeline thread, most inside `rd_kafka_producev`. mimalloc takes such frees without a lock.
//! Measured in the commit that made the switch, alternating with the build before it: the drain
//! of the larger backlog 131,403–132,320 → 141,596–143,914 records/s once running (three pairs),
//! of 182,569 events 136,036 / 145,382 → 145,419 / 154,882 (two pairs). See
//! [`give_back_memory_promptly`] for what keeps its memory in check.
//!
//! Why not the `mimalloc` crate's allocator: it passes every request to `mi_malloc_aligned`, which
//! checks the alignment before it takes the small-block path. Nearly all of our allocations are
//! strings and vectors of bytes or words, and mimalloc's blocks are multiples of the word size from
//! 16-byte aligned page starts, so a request aligned to at most a word is served by plain
//! `mi_malloc`. Under callgrind, the contact-edit transform (`cargo bench --bench engine --
//! contact-profile`) made ~28 allocations per record at ~43 instructions each through the aligned
//! entry; see the commit for the difference.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment `mi_malloc` guarantees for any size: a word. Blocks of every size class
/// are multiples of it, and pages start 16-byte aligned.
const WORD: usize = std::mem::size_of::<usize>();

pub struct MiMalloc;

// SAFETY: every path returns memory from mimalloc with at least the layout's alignment (plain
// calls only when the alignment is at most a word, see `WORD`), and frees it with `mi_free`, which
// accepts pointers from all of mimalloc's allocation functions.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

/// The process's memory is mapped in 4 KiB pages, not in 2 MiB transparent huge pages. mimalloc
/// asks for huge pages on the regions it reserves (`madvise(MADV_HUGEPAGE)`, which the kernel's
/// default `madvise` mode honours), so each first touch of a region zeroes 2 MiB at once and a
/// huge page stays resident as long as any block in it lives. Draining the end-to-end benchmark's
/// larger backlog, page faults zeroing huge pages were 17% of the pipeline thread's samples. With
/// huge pages off (one round of each backlog per build, alternating): the pipeline thread's CPU per
/// record fell from 19.4 to 12.7 µs (default backlog) and from 13.8 to 11.3 (larger), peak RSS
/// from 72 to 45 MiB and from 95–100 to 74–80, RSS at a steady 1,000 records/s from 49–52 to
/// 29–39. The flag covers the whole process (librdkafka's allocations too), whichever mimalloc
/// options are set.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// mimalloc's options set here: their values in `mi_option_t` of v3's `mimalloc.h`
// (libmimalloc-sys's bindings name only older ones).
const ARENA_PURGE_MULT: mi::mi_option_t = 24;
const ARENA_MAX_OBJECT_SIZE: mi::mi_option_t = 45;

/// What mimalloc frees goes back to the system about a second later, in its arenas too (10 s by
/// default), and a block or page of more than 64 KiB is mapped on its own and unmapped when
/// freed, as glibc did for librdkafka's large buffers. The command line calls it first thing.
///
/// Why: librdkafka's memory is mimalloc's too (see the module docs). A fetch that brings a whole
/// backlog allocates a message for each of its records in the broker thread, which the pipeline
/// frees as it takes them, and a buffer as large as the response (64 MiB in the end-to-end
/// benchmark). With mimalloc's defaults that garbage stayed resident through a backfill. Peak RSS
/// draining the larger backlog (`E2E_PROSPECTS=4000`) was 79–83 MiB with the defaults, 67–69
/// with these and 63–65 under glibc; on 182,569 events (`E2E_PROSPECTS=12000`) 144–146 MiB,
/// 125–126 and 124–125. With the limit at 4 MiB instead of 64 KiB (mimalloc's large page), the
/// larger backlog's peak stayed at 79–82 MiB.
pub fn give_back_memory_promptly() {
    // SAFETY: mi_option_set only sets allocator parameters; it takes no pointers.
    unsafe {
        mi::mi_option_set(ARENA_PURGE_MULT, 1);
        mi::mi_option_set(ARENA_MAX_OBJECT_SIZE, 64);
    }
}

/// Gives the memory freed in this thread's mimalloc heap back to the system now. Otherwise it goes
/// back only when its thread allocates again after the purge delay; an idle thread never does.
/// - After a restore: a state reader's fetch buffers and decoding garbage were freed in its
///   (blocking-pool) thread's heap. Measured with `cargo bench --bench e2e` (larger backlog): RSS
///   at a steady 1,000 records/s after a restore was 69–73 MiB without this. The pipeline's
///   thread collects its heap afterwards too: it received the restored states.
/// - After a backfill: see `Pipeline::give_back_after_burst`.
pub fn give_back_freed_memory() {
    // SAFETY: mi_collect only frees memory mimalloc holds for this thread; it takes no pointers.
    unsafe { mi::mi_collect(true) }
}

// Not in libmimalloc-sys's v3 bindings: mimalloc's main heap (see `live_heap_bytes`).
unsafe extern "C" {
    fn mi_heap_main() -> *mut mi::mi_heap_t;
}

/// Bytes in the blocks allocated and not yet freed in mimalloc's main heap, as its size classes
/// round them: what a value held in memory costs, for the benchmarks (`cargo bench --bench engine
/// -- summary` reports the engine's state per case with it, on one thread, whose allocations come
/// from that heap). Walks every page of the heap; not for a hot path.
pub fn live_heap_bytes() -> usize {
    unsafe extern "C" fn add_area(
        _heap: *const mi::mi_heap_t,
        area: *const mi::mi_heap_area_t,
        block: *mut c_void,
        _block_size: usize,
        total: *mut c_void,
    ) -> bool {
        // Called once per area with no block (blocks are not visited: see the call below).
        if block.is_null() {
            // SAFETY: mimalloc passes a valid area; `total` is the `usize` given below.
            unsafe {
                let area = &*area;
                *(total as *mut usize) += area.used * area.full_block_size;
            }
        }
        true
    }
    let mut total = 0usize;
    // SAFETY: the main heap lives as long as the process; the visitor only reads the area it is
    // given and adds to `total`, which outlives the call.
    unsafe {
        mi::mi_heap_visit_blocks(
            mi_heap_main(),
            false,
            Some(add_area),
            &mut total as *mut usize as *mut c_void,
        );
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_is_told_to_use_no_transparent_huge_pages() {
        no_transparent_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
            "THP_enabled is not 0 in /proc/self/status:\n{status}"
        );
    }

    #[test]
    fn what_c_code_allocates_comes_from_mimalloc() {
        // librdkafka calls malloc and free: with the override, those are mimalloc's.
        // SAFETY: a block from malloc, freed once with free.
        unsafe {
            let p = libc::malloc(100);
            assert!(!p.is_null());
            assert!(
                mi::mi_is_in_heap_region(p),
                "malloc is not mimalloc's: is libmimalloc-sys's `override` feature on?"
            );
            libc::free(p);
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_block_above_64_kib_is_unmapped_as_soon_as_it_is_freed() {
        const SIZE: usize = 1024 * 1024;
        give_back_memory_promptly();
        // Whether the pages around `p` are mapped: mincore fails with ENOMEM where they are not.
        let mapped = |p: *mut c_void| {
            let page = (p as usize) & !4095;
            let mut residency = vec![0u8; SIZE / 4096];
            // SAFETY: mincore only reads the page tables of the range and writes `residency`,
            // which has a byte for each of its pages.
            unsafe { libc::mincore(page as *mut c_void, SIZE - 4096, residency.as_mut_ptr()) == 0 }
        };
        // SAFETY: a block from malloc (mimalloc's, see above), written within its size, freed once.
        unsafe {
            let p = libc::malloc(SIZE);
            assert!(!p.is_null());
            p.cast::<u8>().write_bytes(1, SIZE);
            assert!(mapped(p));
            libc::free(p);
            assert!(
                !mapped(p),
                "the freed 1 MiB block is still mapped: it came from mimalloc's arenas"
            );
        }
    }

    #[test]
    fn the_live_heap_grows_by_what_is_held_and_shrinks_when_it_is_freed() {
        let before = live_heap_bytes();
        let held: Vec<Vec<u8>> = (0..8000).map(|_| vec![7u8; 1000]).collect();
        let holding = live_heap_bytes();
        // 8,000 blocks of 1,000 bytes (each rounded up to its size class) and the outer vector.
        // The margins leave room for other tests allocating on their threads meanwhile.
        assert!(
            holding >= before + 8_000_000 && holding < before + 10_500_000,
            "before {before}, holding {holding}"
        );
        drop(held);
        let after = live_heap_bytes();
        assert!(
            after < holding - 7_000_000,
            "holding {holding}, after {after}"
        );
    }

    #[test]
    fn every_block_has_its_layouts_alignment_and_keeps_its_bytes_through_realloc() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 9, 16, 24, 40, 100, 1000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed with the layout it was made with.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc: size {size}, align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size}, align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
