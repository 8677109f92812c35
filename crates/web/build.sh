#!/usr/bin/env bash
# Build the npm package `qzhou-embed` into crates/web/pkg (and a tarball with --pack):
#   cargo build --target wasm32-unknown-unknown (profile `web`) -> wasm-bindgen --target web
#   -> wasm-opt -Oz when a good one is on PATH (never Debian's binaryen 108: it corrupts
#   wasm-bindgen output; use npm binaryen) -> copy index.js/index.d.ts/README/package.json.
# Installs the wasm32 target and wasm-bindgen-cli (the exact version in Cargo.lock) if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=$here/pkg

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3}' "$root/Cargo.lock")
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  # Not --locked: a locked transitive crate version is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$want"
fi

(cd "$root" && cargo build -p qzhou-web --target wasm32-unknown-unknown --profile web)
rm -rf "$out" && mkdir -p "$out/wasm"
wasm-bindgen --target web --out-dir "$out/wasm" --out-name qzhou_web \
  "$target_dir/wasm32-unknown-unknown/web/qzhou_web.wasm"
# npm binaryen (a devDependency: `npm ci` in crates/web) first, else one on PATH.
wasm_opt=$here/node_modules/.bin/wasm-opt
[ -x "$wasm_opt" ] || wasm_opt=$(command -v wasm-opt || true)
if [ -n "$wasm_opt" ] && "$wasm_opt" --version | grep -qv 'version 108'; then
  "$wasm_opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-reference-types --enable-multivalue --enable-simd \
    "$out/wasm/qzhou_web_bg.wasm" -o "$out/wasm/qzhou_web_bg.wasm.opt" \
    && mv "$out/wasm/qzhou_web_bg.wasm.opt" "$out/wasm/qzhou_web_bg.wasm"
fi
cp "$here/npm/package.json" "$here/npm/index.js" "$here/npm/index.d.ts" "$here/npm/README.md" "$out/"
raw=$(stat -c %s "$out/wasm/qzhou_web_bg.wasm")
gz=$(gzip -9 -c "$out/wasm/qzhou_web_bg.wasm" | wc -c)
echo "qzhou-embed: wasm $raw bytes raw, $gz bytes gzip -9 -> $out"
if [ "${1:-}" = "--pack" ]; then
  (cd "$out" && npm pack --silent)
fi
