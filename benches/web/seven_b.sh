#!/usr/bin/env bash
# "7B in a tab", measured natively (a benchmark, not a test): a Qwen2.5-7B-shaped q4 web pack
# (random weights, the real 152 064-token vocabulary and Qwen tokenizer) loaded on Burn's wgpu
# backend with the browser's layout (128 MiB buffers, q4/q8 projections and the token-embedding
# table kept quantised on the GPU), one short text embedded. Prints the pack size, the device
# bytes the wgpu allocator holds, the table's share and the process's peak RSS, with the table
# quantised and (for comparison) dequantised to f32 at load.
#
#   benches/web/seven_b.sh [DIR]        # DIR default /tmp/qzhou-seven-b (needs ~5 GB of disk)
#
# Writing the pack takes ~40 min on one core (random weights + q4 least-squares search); it is
# reused when DIR already holds manifest-q4.json. Each load needs ~6 GB of host memory on a
# software Vulkan device (lavapipe: its "GPU memory" is host memory) plus the pack's reads.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/tmp/qzhou-seven-b}
target=${CARGO_TARGET_DIR:-target}
cargo build --workspace --all-targets --quiet
bin="$target/debug/examples/seven_b_pack"
[ -f "$dir/manifest-q4.json" ] || "$bin" write "$dir"
echo "pack: $(du -sb "$dir" | cut -f1) bytes in $dir (weights + config + tokenizer)"
echo "adapter: $(vulkaninfo --summary 2>/dev/null | grep -m1 deviceName | sed 's/.*= //' || echo 'default wgpu adapter')"
for table in quantised f32-table; do
  echo "--- table: $table"
  if [ "$table" = quantised ]; then "$bin" embed "$dir"; else "$bin" embed "$dir" f32-table; fi
done
