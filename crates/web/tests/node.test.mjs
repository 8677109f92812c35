// The npm package in Node.js (no WebGPU): the CPU wasm fallback gives the native CPU numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { prepare, serve, TEXTS, REFERENCE, compare, FIXTURES } from './harness.mjs';
import { Embedder, hasWebGPU } from '../pkg/index.js';

let env, http;
before(async () => {
  env = prepare();
  http = await serve({ '/model/': `${env.dir}/model/` });
});
after(() => http && http.server.close());

test('node: auto picks the CPU backend and matches native CPU within 1e-5', { timeout: 120_000 }, async () => {
  assert.equal(await hasWebGPU(), false);
  const e = await Embedder.load(`${http.url}/model/`, { quantization: 'f32' });
  const info = e.info();
  assert.equal(info.backend, 'cpu');
  assert.equal(info.quantization, 'f32');
  assert.equal(e.dims, 32);
  const got = (await e.embed(TEXTS, { kind: 'document' })).map((r) => Array.from(r));
  const native = compare(got, env.nativeRows);
  console.log(`node cpu f32 vs native cpu: worst cos ${native.worstCos}, max|Δ| ${native.worstDiff}`);
  assert.ok(native.worstDiff <= 1e-5, `max|Δ| ${native.worstDiff}`);
  const ref = compare(got, REFERENCE);
  assert.ok(ref.worstCos >= 0.9999, `vs transformers: cos ${ref.worstCos}`);
  // Per-call options: no normalisation keeps the raw mean; last-token pooling is another vector.
  const [raw] = await e.embed(TEXTS[1], { kind: 'document', normalize: false });
  const norm = Math.hypot(...raw);
  assert.ok(Math.abs(norm - 1) > 1e-3, `unnormalised norm ${norm}`);
  assert.ok(compare([Array.from(raw).map((v) => v / norm)], [got[1]]).worstDiff < 1e-6);
  const [last] = await e.embed(TEXTS[1], { kind: 'document', pooling: 'last' });
  assert.ok(compare([Array.from(last)], [got[1]]).worstCos < 0.999);
  await assert.rejects(e.embed(['ok', ''], { kind: 'document' }), /text #1 is empty/);
  await assert.rejects(e.embed(['ok'], { task: 'NoSuchTask' }), /NoSuchTask/);
  await assert.rejects(e.embed(['ok'], { kind: 'passagez' }), /kind `passagez`/);
  e.dispose();
  assert.throws(() => e.dims, /disposed/);
});

test('node: asking for WebGPU where there is none rejects clearly', { timeout: 60_000 }, async () => {
  await assert.rejects(Embedder.load(`${http.url}/model/`, { backend: 'webgpu' }), /WebGPU is not available here/);
});

test('node: in-memory models (safetensors, and a q8 pack) load with the same API', { timeout: 120_000 }, async () => {
  const dir = join(FIXTURES, 'tiny-qwen2');
  const read = (n) => readFileSync(join(dir, n));
  const st = await Embedder.load({
    config: read('config.json'), tokenizer: read('tokenizer.json'), weights: read('model.safetensors'),
    // sentence_bert_config.json carries max_seq_length 96, which truncates the long text.
    sentenceTransformers: Object.fromEntries(['modules.json', '1_Pooling/config.json', 'sentence_bert_config.json',
      'config_sentence_transformers.json'].map((n) => [n, read(n)])),
  });
  const got = (await st.embed(TEXTS, { kind: 'document' })).map((r) => Array.from(r));
  assert.ok(compare(got, env.nativeRows).worstDiff <= 1e-5);
  assert.equal(st.info().quantization, 'f32');
  st.dispose();
  const packDir = join(env.dir, 'model');
  const manifest = JSON.parse(readFileSync(join(packDir, 'manifest-q8.json'), 'utf8'));
  const files = Object.fromEntries(manifest.files.map((f) => [f.name, readFileSync(join(packDir, f.name))]));
  const q8 = await Embedder.load({ config: read('config.json'), tokenizer: read('tokenizer.json'), manifest, files,
    sentenceTransformers: { 'sentence_bert_config.json': read('sentence_bert_config.json') } });
  assert.equal(q8.info().quantization, 'q8');
  const rows = (await q8.embed(TEXTS, { kind: 'document' })).map((r) => Array.from(r));
  assert.ok(compare(rows, REFERENCE).worstCos >= 0.995);
  q8.dispose();
  await assert.rejects(Embedder.load({ config: read('config.json'), tokenizer: read('tokenizer.json') }), /need `weights`/);
  await assert.rejects(Embedder.load({ config: read('config.json'), tokenizer: read('tokenizer.json'), manifest, files: {} }),
    /weights-q8-000\.bin/);
});

test('node: hostile manifests are refused before fetching outside the model or reading past a listed size', { timeout: 60_000 }, async () => {
  const dir = join(env.dir, 'model');
  const real = JSON.parse(readFileSync(join(dir, 'manifest-q8.json'), 'utf8'));
  const fetched = [];
  // A fetch that serves the model folder, with a manifest of our choosing and, for one file,
  // an endless body (a hostile server).
  const fakeFetch = (manifest) => async (url) => {
    const name = decodeURIComponent(new URL(url).pathname.replace(/^\/model\//, ''));
    fetched.push(name);
    if (name === 'manifest-q8.json') return new Response(JSON.stringify(manifest));
    if (name === 'endless.bin') {
      let sent = 0;
      const body = new ReadableStream({
        pull(c) { sent += 1 << 16; if (sent > (64 << 20)) c.close(); else c.enqueue(new Uint8Array(1 << 16)); },
      });
      return new Response(body);
    }
    return new Response(readFileSync(join(dir, name)));
  };
  const load = (manifest) => Embedder.load('http://model.test/model/', { quantization: 'q8', cache: false, fetch: fakeFetch(manifest) });
  for (const [bad, why] of [
    [{ ...real, files: [{ ...real.files[0], name: '../../etc/passwd' }] }, /not a plain relative file name/],
    [{ ...real, files: [{ ...real.files[0], name: 'https://evil.test/w.bin' }] }, /not a plain relative file name/],
    [{ ...real, files: [{ ...real.files[0], name: '/abs.bin' }] }, /not a plain relative file name/],
    [{ ...real, files: [{ ...real.files[0], bytes: -1 }] }, /not a byte count/],
    [{ ...real, files: [{ ...real.files[0], bytes: '12' }] }, /not a byte count/],
    [{ ...real, files: 'weights.bin' }, /not a weight pack manifest/],
  ]) {
    fetched.length = 0;
    await assert.rejects(load(bad), why);
    assert.deepEqual(fetched.filter((n) => n !== 'manifest-q8.json' && !real.assets?.some((a) => a.name === n)), [],
      `fetched ${fetched}`);
  }
  // A server streaming past the listed size: reading stops right after the listed bytes.
  await assert.rejects(load({ ...real, files: [{ name: 'endless.bin', bytes: 1000, sha256: '00' }] }),
    /endless\.bin: more than the 1000 bytes the manifest lists/);
  // The checks in the wasm module (manifest validation, checksums) still speak for the rest.
  const lying = structuredClone(real);
  lying.tensors[0].shape = [4294967295, 4294967295];
  await assert.rejects(load(lying), /shape|rows|bytes/);
});
