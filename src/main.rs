//! The `tf` binary: the role dispatch is src/lib.rs; only the allocator lives here.

use std::process::ExitCode;

/// mimalloc: glibc's malloc costs the server 10-17% of its instructions per request, and
/// musl's serialises threads.
#[global_allocator]
static ALLOCATOR: mimalloc_as_malloc::Mimalloc = mimalloc_as_malloc::Mimalloc;

fn main() -> ExitCode {
    tf::main()
}

/// mimalloc as Rust's allocator, asked the way std asks C's malloc: plain calls unless the
/// alignment is more than malloc's. mimalloc v3 serves an `mi_malloc_aligned` whose size
/// class is not a power of two (most blocks over 1 KiB: boxed futures, buffers) by
/// allocating more and aligning inside, the slow path of both malloc and free; the
/// `mimalloc` crate's allocator asks that way for everything.
mod mimalloc_as_malloc {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys::{
        mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
        mi_zalloc_aligned,
    };

    /// The alignment every block of at least this size has (max_align_t), which C code
    /// calling mimalloc as malloc relies on too.
    const MALLOC_ALIGN: usize = 16;

    fn malloc_aligns(align: usize, size: usize) -> bool {
        align <= MALLOC_ALIGN && align <= size
    }

    pub struct Mimalloc;

    unsafe impl GlobalAlloc for Mimalloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if malloc_aligns(layout.align(), layout.size()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if malloc_aligns(layout.align(), layout.size()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            mi_free(ptr.cast::<c_void>());
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if malloc_aligns(layout.align(), new_size) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
