//! Where the GPU backends keep compiled kernels and autotune results between runs.
//!
//! cubecl (under burn-cuda and burn-wgpu) compiles every kernel at run time (NVRTC on CUDA) and
//! autotunes matmuls and reductions the first time it meets each shape, blocking while it
//! benchmarks the candidates: a first training step can take minutes. Its compiled-kernel cache
//! is off by default and its autotune cache lands in the nearest Cargo `target/`, so a second
//! run would pay again. Unless a `cubecl.toml` / `burn.toml` already chooses a compilation
//! cache, qzhou points both at one stable per-user folder: `$QZHOU_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/qzhou/kernels`, else `~/.cache/qzhou/kernels` (`QZHOU_KERNEL_CACHE=off`
//! leaves cubecl's defaults). `CUBECL_DEBUG_LOG=stderr` (or a file) logs each compilation and
//! autotune step, which tells a slow first step from a hung one.

use std::path::PathBuf;
use std::sync::OnceLock;

/// What [`configure`] decided for this process (set once, by the first GPU dispatch).
static IN_USE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The folder this process caches kernels in, once [`configure`] has run; `None` before, or
/// when cubecl's own configuration stands.
pub fn in_use() -> Option<PathBuf> {
    IN_USE.get().cloned().flatten()
}

/// The folder qzhou caches kernels in, or `None` when `QZHOU_KERNEL_CACHE=off` or no home
/// folder is known.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn folder() -> Option<PathBuf> {
    match std::env::var_os("QZHOU_KERNEL_CACHE") {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("qzhou").join("kernels"))
}

/// Configure cubecl's caches before the first GPU client starts (see the module docs).
/// Returns the folder in use, or `None` when cubecl's own configuration stands (caching off,
/// a config file choosing its own cache, or cubecl already configured in this process).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn configure() -> Option<PathBuf> {
    IN_USE.get_or_init(configure_cubecl).clone()
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn configure_cubecl() -> Option<PathBuf> {
    use burn_cubecl::cubecl::config::cache::CacheConfig;
    use burn_cubecl::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    if CubeClRuntimeConfig::storage().lock().is_some() {
        return None;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if config.compilation.cache.is_some() {
        return None;
    }
    let dir = folder()?;
    if std::fs::create_dir_all(&dir).is_err() {
        return None;
    }
    config.compilation.cache = Some(CacheConfig::File(dir.clone()));
    config.autotune.cache = CacheConfig::File(dir.clone());
    // A second `configure` or an earlier read in this process makes `set` panic: checked above,
    // but another thread could race us between the check and here; keep cubecl's own then.
    let set = std::panic::catch_unwind(|| CubeClRuntimeConfig::set(config));
    set.ok().map(|_| dir)
}
