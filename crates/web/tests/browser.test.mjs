// The built npm package in real headless Chromium (Debian's, driven by playwright-core) on
// WebGPU through its SwiftShader adapter: accuracy per quantization, cache, tokenizer parity
// with Python `tokenizers`, the worker and page examples, and every load error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { prepare, serve, launch, evaluate, compare, TEXTS, REFERENCE, FIXTURES } from './harness.mjs';

let env, http, browser;
before(async () => {
  env = prepare();
  http = await serve({
    '/model/': `${env.dir}/model/`,
    '/truncated/': `${env.dir}/truncated/`,
    '/corrupt/': `${env.dir}/corrupt/`,
    '/wide/': `${env.dir}/wide/`,
  });
  browser = await launch({ webgpu: true });
  await browser.page.goto(`${http.url}/crates/web/tests/page.html`);
  await browser.page.waitForFunction(() => document.title === 'ready', null, { timeout: 30_000 });
});
after(async () => {
  if (browser) await browser.context.close();
  if (http) http.server.close();
});

/** Load `quantization` from `base` on WebGPU and embed the fixture texts as documents. */
function embedInPage(quantization, extra = {}, base = '/model/') {
  return evaluate(browser.page, async ({ q, texts, extra, base }) => {
    const t0 = performance.now();
    const e = await window.qz.Embedder.load(base, { quantization: q, backend: 'webgpu', ...extra });
    const t1 = performance.now();
    const rows = (await e.embed(texts, { kind: 'document' })).map((r) => Array.from(r));
    const t2 = performance.now();
    const info = e.info();
    e.dispose();
    return { rows, info, loadMs: t1 - t0, embedMs: t2 - t1 };
  }, { q: quantization, texts: TEXTS, extra, base }, 240_000, browser.logs);
}

// Minimum cosine vs the transformers f32 reference (and vs native f32 of the same weights).
const TARGETS = { f32: 0.9999, f16: 0.9999, q8: 0.995, q4: 0.98 };
for (const [q, minCos] of Object.entries(TARGETS)) {
  test(`webgpu ${q}: cos >= ${minCos} vs transformers and native f32`, { timeout: 300_000 }, async () => {
    const r = await embedInPage(q);
    assert.equal(r.info.backend, 'webgpu');
    assert.equal(r.info.adapter.api, 'WebGPU');
    assert.equal(r.info.quantization, q);
    // q8/q4 projections stay block-quantised on the GPU and run the fused WGSL kernel
    // (tiny-qwen2: 2 layers × 7 projections); f32/f16 ones are dense f32.
    const fused = q === 'q8' || q === 'q4';
    assert.equal(r.info.deviceWeights.quantizedProjections, fused ? 14 : 0);
    assert.equal(r.info.deviceWeights.denseProjections, fused ? 0 : 14);
    const ref = compare(r.rows, REFERENCE);
    const native = compare(r.rows, env.nativeRows);
    console.log(`webgpu ${q} (${r.info.adapter.architecture}): vs transformers worst cos ${ref.worstCos.toFixed(7)} ` +
      `max|Δ| ${ref.worstDiff.toExponential(2)}; vs native f32 worst cos ${native.worstCos.toFixed(7)}; ` +
      `load ${r.loadMs.toFixed(0)} ms, embed ${r.embedMs.toFixed(0)} ms`);
    assert.ok(ref.worstCos >= minCos, `vs transformers: ${ref.worstCos}`);
    assert.ok(native.worstCos >= minCos, `vs native f32: ${native.worstCos}`);
  });
}

test('webgpu splits weights bigger than maxBufferBytes across buffers, same results', { timeout: 300_000 }, async () => {
  // 64 KiB: the 151936 × 32 f32 embedding table (19 MB) becomes 297 buffers of 512 rows.
  const r = await embedInPage('f32', { maxBufferBytes: 65536 });
  assert.equal(r.info.deviceWeights.embeddingBuffers, 297);
  const ref = compare(r.rows, REFERENCE);
  console.log(`webgpu f32 split over 297 buffers: worst cos ${ref.worstCos.toFixed(7)}, embed ${r.embedMs.toFixed(0)} ms`);
  assert.ok(ref.worstCos >= 0.9999, `vs transformers: ${ref.worstCos}`);
});

test('webgpu keeps a q8/q4 embedding table quantised: same vectors as the f32 table', { timeout: 300_000 }, async () => {
  for (const q of ['q8', 'q4']) {
    const bits = q === 'q8' ? 8 : 4;
    const packed = await embedInPage(q);
    const dense = await embedInPage(q, { quantizedEmbedding: false });
    assert.equal(packed.info.deviceWeights.embeddingBits, bits);
    assert.equal(packed.info.deviceWeights.embeddingFormat, q);
    assert.equal(dense.info.deviceWeights.embeddingBits, 32);
    assert.equal(dense.info.deviceWeights.embeddingFormat, 'f32');
    // 151 936 rows of 32 values: the words, one f16 scale (q8) or scale and min (q4) per block
    // of 32, and a 4-byte power of two per row.
    assert.equal(packed.info.deviceWeights.embeddingBytes, 151_936 * (32 * bits / 8 + (bits === 8 ? 2 : 4) + 4));
    assert.equal(dense.info.deviceWeights.embeddingBytes, 151_936 * 32 * 4);
    let worst = 0;
    packed.rows.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - dense.rows[i][j])); }));
    console.log(`webgpu ${q}: quantised vs f32 embedding table max|Δ| ${worst.toExponential(2)}; ` +
      `table ${packed.info.deviceWeights.embeddingBytes} vs ${dense.info.deviceWeights.embeddingBytes} bytes`);
    assert.ok(worst <= 1e-5, `${q}: max |diff| ${worst}`);
  }
});

test('webgpu keeps a q4k embedding table and q4k projections (128-wide model) quantised: same vectors as the f32 table and native', { timeout: 300_000 }, async () => {
  const packed = await embedInPage('q4', {}, '/wide/');
  const dense = await embedInPage('q4', { quantizedEmbedding: false }, '/wide/');
  assert.equal(packed.info.deviceWeights.embeddingFormat, 'q4k');
  // q/gate/up/down as q4k through q4k_matmul.wgsl, k/v/o as q8: all 7 stay packed.
  assert.equal(packed.info.deviceWeights.quantizedProjections, 7);
  assert.equal(packed.info.deviceWeights.denseProjections, 0);
  const native = compare(packed.rows, env.wideNativeRows);
  console.log(`webgpu q4k projections vs native CPU (dequantised) of the same pack: worst cos ` +
    `${native.worstCos.toFixed(7)} max|Δ| ${native.worstDiff.toExponential(2)}`);
  assert.ok(native.worstDiff <= 1e-5, `q4k pack: browser vs native max |diff| ${native.worstDiff}`);
  assert.equal(packed.info.deviceWeights.embeddingBits, 4);
  assert.equal(dense.info.deviceWeights.embeddingFormat, 'f32');
  // 151 936 rows of 128 values: 64 bytes of nibbles, 16 of scale/min codes, one f16 (d, dmin)
  // pair per 128 values and a 4-byte power of two per row.
  assert.equal(packed.info.deviceWeights.embeddingBytes, 151_936 * (64 + 16 + 4 + 4));
  assert.equal(dense.info.deviceWeights.embeddingBytes, 151_936 * 128 * 4);
  let worst = 0;
  packed.rows.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - dense.rows[i][j])); }));
  console.log(`webgpu q4k table: quantised vs f32 max|Δ| ${worst.toExponential(2)}; ` +
    `table ${packed.info.deviceWeights.embeddingBytes} vs ${dense.info.deviceWeights.embeddingBytes} bytes`);
  assert.ok(worst <= 1e-5, `q4k: max |diff| ${worst}`);
});

test('webgpu: every matmulKernel gives the same vectors, and info() says which is in force', { timeout: 300_000 }, async () => {
  // 'auto' (the default) measures Burn's matmul and the WGSL kernels per shape; the others fix one.
  for (const q of ['q8', 'f32']) {
    const auto = await embedInPage(q);
    assert.equal(auto.info.matmulKernel, 'auto');
    for (const kernel of ['burn', 'row-tile', 'tiled']) {
      const r = await embedInPage(q, { matmulKernel: kernel });
      assert.equal(r.info.matmulKernel, kernel);
      let worst = 0;
      r.rows.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - auto.rows[i][j])); }));
      console.log(`webgpu ${q} matmulKernel ${kernel} vs auto: max|Δ| ${worst.toExponential(2)}, embed ${r.embedMs.toFixed(0)} ms`);
      assert.ok(worst <= 1e-5, `${q} ${kernel}: max |diff| ${worst}`);
    }
  }
});

test('dispose gives the weights\' GPU memory back', { timeout: 300_000 }, async () => {
  const r = await evaluate(browser.page, async () => {
    const sizes = [];
    for (const q of ['q8', 'f32', 'q8']) {
      const e = await window.qz.Embedder.load('/model/', { quantization: q, backend: 'webgpu', cache: false });
      await e.embed(['a short text'], { kind: 'document' });
      const loaded = window.qz.gpuMemoryReservedBytes();
      const table = e.info().deviceWeights.embeddingBytes;
      e.dispose();
      sizes.push({ q, loaded, table, disposed: window.qz.gpuMemoryReservedBytes() });
    }
    return sizes;
  }, undefined, 240_000, browser.logs);
  for (const s of r) {
    console.log(`webgpu ${s.q}: ${s.loaded} bytes reserved while loaded (table ${s.table}), ${s.disposed} after dispose`);
    // The embedding table alone is freed, whatever else the allocator keeps for activations.
    assert.ok(s.loaded - s.disposed >= s.table, `${s.q}: ${s.loaded} -> ${s.disposed}`);
  }
});

test('second load comes from the Cache API', { timeout: 120_000 }, async () => {
  const r = await evaluate(browser.page, async () => {
    await window.qz.clearCache();
    const seen = [];
    const a = await window.qz.Embedder.load('/model/', { quantization: 'q4', backend: 'cpu', onProgress: (p) => seen.push(p) });
    const first = a.info().download; a.dispose();
    const b = await window.qz.Embedder.load('/model/', { quantization: 'q4', backend: 'cpu' });
    const second = b.info().download; b.dispose();
    return { first, second, last: seen[seen.length - 1], monotonic: seen.every((p, i) => i === 0 || p.loaded >= seen[i - 1].loaded) };
  }, undefined, 100_000, browser.logs);
  assert.equal(r.first.fromCache, 0);
  assert.equal(r.last.loaded, r.last.total);
  assert.ok(r.monotonic);
  assert.equal(r.second.fromCache, r.second.bytes);
  assert.ok(r.second.bytes > 3_000_000);
});

test('wasm tokenizer ids equal Python tokenizers on the multilingual corpus', { timeout: 60_000 }, async () => {
  const texts = readFileSync(join(FIXTURES, 'multilingual.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).text);
  const want = JSON.parse(readFileSync(join(FIXTURES, 'multilingual_ids.json'), 'utf8')).ids;
  assert.ok(texts.length >= 200);
  const got = await evaluate(browser.page, async (texts) => {
    const tk = await window.qz.Tokenizer.load('/tests/fixtures/tiny-qwen2/tokenizer.json');
    return tk.encode(texts);
  }, texts, 50_000, browser.logs);
  got.forEach((ids, i) => assert.deepEqual(ids, want[i], `text ${i}: ${JSON.stringify(texts[i])}`));
});

test('the worker example embeds in a module Web Worker', { timeout: 300_000 }, async () => {
  const r = await evaluate(browser.page, async (texts) => {
    const { WorkerEmbedder } = await import('/examples/web/embed-client.js');
    const w = new WorkerEmbedder(new URL('/examples/web/worker.js', location.href));
    const info = await w.load('/model/', { quantization: 'f32', backend: 'webgpu' });
    const rows = (await w.embed(texts, { kind: 'document' })).map((r) => Array.from(r));
    w.terminate();
    return { info, rows };
  }, TEXTS.slice(0, 3), 240_000, browser.logs);
  assert.equal(r.info.backend, 'webgpu');
  assert.ok(compare(r.rows, REFERENCE.slice(0, 3)).worstCos >= 0.9999);
});

test('the example page ranks documents', { timeout: 300_000 }, async () => {
  const page = await browser.context.newPage();
  try {
    await page.goto(`${http.url}/examples/web/index.html?model=/model/&q=f32`);
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 240_000 });
    const items = await page.$$eval('#results li', (lis) => lis.map((li) => li.textContent));
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'done', await page.textContent('#status'));
    assert.equal(items.length, 5);
    assert.match(await page.textContent('#status'), /ready: webgpu/);
  } finally {
    await page.close();
  }
});

const ERRORS = [
  ['a wrong URL', { url: '/no-such-model/', q: 'q8' }, /GET .*no-such-model\/manifest-q8\.json failed: 404/],
  ['a truncated weight file', { url: '/truncated/', q: 'q8' }, /weights-q8-000\.bin is \d+ bytes, the manifest says \d+ \(truncated/],
  ['a checksum mismatch', { url: '/corrupt/', q: 'q8' }, /weights-q8-000\.bin fails its checksum/],
  ['an unsupported quantization', { url: '/model/', q: 'q3' }, /unsupported quantization 'q3'/],
  ['an unknown matmul kernel', { url: '/model/', q: 'q8', extra: { matmulKernel: 'fast' } }, /matmul kernel `fast` \(expected `auto`, `burn`, `row-tile` or `tiled`\)/],
  ['the replaced tiledKernel option', { url: '/model/', q: 'q8', extra: { tiledKernel: true } }, /`tiledKernel` was replaced by `matmulKernel`/],
];
for (const [what, arg, pattern] of ERRORS) {
  test(`load rejects ${what} with a clear message`, { timeout: 120_000 }, async () => {
    const message = await evaluate(browser.page, async ({ url, q, extra }) => {
      try {
        await window.qz.Embedder.load(url, { quantization: q, backend: 'cpu', cache: false, ...extra });
        return 'resolved';
      } catch (e) {
        return e.message;
      }
    }, arg, 100_000, browser.logs);
    assert.match(message, pattern);
  });
}

test('without a WebGPU adapter: webgpu rejects, auto falls back to the CPU backend', { timeout: 180_000 }, async () => {
  const plain = await launch({ webgpu: false });
  try {
    await plain.page.goto(`${http.url}/crates/web/tests/page.html`);
    await plain.page.waitForFunction(() => document.title === 'ready', null, { timeout: 30_000 });
    const r = await evaluate(plain.page, async (texts) => {
      let rejected = null;
      try { await window.qz.Embedder.load('/model/', { quantization: 'f32', backend: 'webgpu' }); } catch (e) { rejected = e.message; }
      const e = await window.qz.Embedder.load('/model/', { quantization: 'f32' });
      const rows = (await e.embed(texts, { kind: 'document' })).map((r) => Array.from(r));
      return { rejected, backend: e.info().backend, rows };
    }, TEXTS, 150_000, plain.logs);
    assert.match(r.rejected, /WebGPU .*(no adapter|not available)/);
    assert.equal(r.backend, 'cpu');
    assert.ok(compare(r.rows, env.nativeRows).worstDiff <= 1e-5);
  } finally {
    await plain.context.close();
  }
});
