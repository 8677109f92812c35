//! Keep freed activation buffers in the process instead of handing them back to the kernel.
//!
//! The CPU backend allocates a fresh output for nearly every tensor op. glibc serves blocks
//! above its mmap threshold (128 KiB, raised dynamically only after a block is freed) with
//! `mmap` and `munmap`s them on free, so every op's output — 20 MB for one `[1024, 4864]` MLP
//! activation — is faulted in and zeroed by the kernel page by page, every layer, every batch.
//! On a 2-core VM that was 5–15 % of an encode (Qwen2.5-0.5B shape: 93 → 98 tokens/s at 8 × 128,
//! 96 → 112 at 32 × 32). Raising the mmap threshold to glibc's maximum (32 MiB) and the trim
//! threshold out of reach lets those blocks be reused from the heap; the heap then keeps its
//! peak size (what the last batch needed), which peak RSS already counted.

/// Tune glibc's allocator as described in the module docs. Process-wide: call once, at the
/// start of `main`, before threads start. A no-op off glibc (other allocators and platforms
/// keep their own policy). Returns whether the settings were applied.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before other threads
        // allocate (documented precondition above).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
