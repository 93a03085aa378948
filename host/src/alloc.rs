//! The binaries' global allocator, [`Routed`]: mimalloc for the trainer, the system allocator for the threads
//! of the analysis sidecar.
//!
//! Training allocates the same buffers every step, and mimalloc keeps freed pages for the next step instead of
//! going back to the kernel. The sidecar allocates in bursts, once per checkpoint. On mimalloc its heap kept
//! what one checkpoint freed, and the only way to hand that back, a forced `mi_collect`, also purges every
//! other thread's cached segments (`_mi_arenas_collect(force)` in mimalloc 2.x's `heap.c` is program-wide), so
//! the trainer faulted its step buffers back in and the process's peak grew. glibc's malloc reuses the
//! sidecar's freed blocks across checkpoints and gives the top of its heaps back by itself, and the trainer's
//! cache is never touched: peak RSS of `train --analyze` on the reference config 1.76–1.80× → 1.42–1.45× a plain
//! run's (issue 19, goal 3; BENCHMARKS.md).
//!
//! A thread opts in with [`use_system_allocator`]; each pointer is freed by the allocator that owns it
//! (`mi_is_in_heap_region`), so memory may cross threads either way. Where [`Routed`] is not the global
//! allocator (the library crates' unit tests), the call is harmless.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mimalloc::MiMalloc;

thread_local! {
    static ON_SYSTEM: Cell<bool> = const { Cell::new(false) };
}

/// mimalloc for every thread except those that called [`use_system_allocator`], which get the system
/// allocator (glibc's malloc on Linux).
pub struct Routed;

/// Sends the calling thread's future allocations to the system allocator, for the rest of its life.
pub fn use_system_allocator() {
    ON_SYSTEM.with(|on| on.set(true));
}

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, option 15 of `mi_option_e`; `libmimalloc-sys` does not
/// name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Lets the allocator hold freed pages for 500 ms before it hands them back to the kernel, instead of mimalloc's
/// default 10 ms. A training step frees its buffers and allocates the same sizes again a few milliseconds later;
/// with the default, a step longer than 10 ms got fresh pages from the kernel every time, zeroed and faulted in
/// (8 % of the reference model's profile, and as much again in copying into them). An idle process still returns
/// its memory within half a second (the analysis sidecar's threads are not on mimalloc at all, see the module
/// doc). `MIMALLOC_PURGE_DELAY` in the environment still decides when it is set.
///
/// On glibc, the system allocator of the sidecar's threads (and of libhdf5), the same for one checkpoint's
/// analysis: by default glibc maps blocks from 128 KiB up afresh until its threshold adapts, and hands the top
/// of a thread's heap back as soon as 128 KiB–32 MiB of it is free, so every checkpoint faulted its capture's
/// activations in again, zeroed (15 % of the sidecar's profile on sparse parity, 230 000 minor faults in a
/// 28-checkpoint sweep). Blocks up to 16 MiB now come from the heap and up to 32 MiB of its free top is kept:
/// 16 000 faults, the capture forward 46 → 29 ms per checkpoint, peak RSS of that sweep 94 → 97–99 MB. Larger
/// blocks (the Fourier grid's 26 MB arrays on the reference) are still mapped and returned at once: with 32 /
/// 64 MiB, `train --analyze` of the reference with `fourier_progress` peaked at 194–204 MB against 183–194 MB
/// with glibc's defaults; with 16 / 32 MiB at 180–190 MB.
/// `GLIBC_TUNABLES` in the environment still decides when it is set. Both binaries call this first thing in
/// `main`.
pub fn hold_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set takes no pointers; it stores one option value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 500) }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt takes no pointers; it sets two of the allocator's parameters, before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        }
    }
}

fn on_system() -> bool {
    // During a thread's teardown the flag may be gone; mimalloc is then the safe default.
    ON_SYSTEM.try_with(Cell::get).unwrap_or(false)
}

fn owned_by_mimalloc(ptr: *mut u8) -> bool {
    // SAFETY: mi_is_in_heap_region only compares the address with mimalloc's arenas and segment map; it never
    // reads through a pointer it does not own.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: each call goes to one of two allocators that uphold GlobalAlloc themselves; a pointer is always freed
// or reallocated by the allocator that returned it.
unsafe impl GlobalAlloc for Routed {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees on `layout`.
        unsafe {
            if on_system() {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if on_system() {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from exactly one of the two; it goes back to that one.
        unsafe {
            if owned_by_mimalloc(ptr) {
                MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`; the block stays with the allocator that owns it.
        unsafe {
            if owned_by_mimalloc(ptr) {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates `len` bytes through [`Routed`] directly (the tests' global allocator is the default one).
    fn block(len: usize) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(len, 16).unwrap();
        // SAFETY: a non-zero size.
        let ptr = unsafe { Routed.alloc(layout) };
        assert!(!ptr.is_null());
        (ptr, layout)
    }

    #[test]
    fn a_thread_that_opts_in_allocates_outside_mimalloc() {
        let (mine, layout) = block(1 << 20);
        assert!(owned_by_mimalloc(mine));
        let (theirs, _) = std::thread::spawn(|| {
            use_system_allocator();
            let (ptr, layout) = block(1 << 20);
            (ptr as usize, layout)
        })
        .join()
        .unwrap();
        let theirs = theirs as *mut u8;
        assert!(!owned_by_mimalloc(theirs));
        // Each block is freed by its owner from a thread that did not allocate it, after a realloc that keeps
        // the contents.
        // SAFETY: both blocks came from `Routed` with `layout` and are freed once.
        unsafe {
            theirs.write_bytes(7, layout.size());
            let grown = Routed.realloc(theirs, layout, 3 << 20);
            assert!(!owned_by_mimalloc(grown));
            assert_eq!(*grown.add(layout.size() - 1), 7);
            Routed.dealloc(grown, Layout::from_size_align(3 << 20, 16).unwrap());
        }
        let mine = mine as usize;
        std::thread::spawn(move || {
            use_system_allocator();
            let mine = mine as *mut u8;
            // SAFETY: as above.
            unsafe { Routed.dealloc(mine, layout) }
        })
        .join()
        .unwrap();
    }
}
