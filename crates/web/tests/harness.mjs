// Shared setup for the npm package's tests: export the tiny fixture model with the real
// `qzhou` binary, make broken copies, compute native CPU reference embeddings, serve the
// repository over HTTP on 127.0.0.1, and launch Debian's Chromium through playwright-core.
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, statSync, truncateSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const FIXTURES = join(ROOT, 'tests', 'fixtures');
export const PKG = join(ROOT, 'crates', 'web', 'pkg');
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
export const QZHOU = process.env.QZHOU_BIN || join(TARGET, 'debug', 'qzhou');

export const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8'));
export const TEXTS = expected.texts;
export const REFERENCE = expected.models['tiny-qwen2'].embeddings['bidirectional-mean'];

/** Export the fixture model, broken copies of it, and native CPU embeddings (once per process). */
export function prepare() {
  if (!existsSync(join(PKG, 'wasm', 'qzhou_web_bg.wasm'))) {
    throw new Error(`${PKG} has no wasm: run crates/web/build.sh first`);
  }
  if (!existsSync(QZHOU)) throw new Error(`no qzhou binary at ${QZHOU} (set QZHOU_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), 'qzhou-web-'));
  const model = join(dir, 'model');
  execFileSync(QZHOU, ['export-web', '--model', join(FIXTURES, 'tiny-qwen2'), '--out', model], { stdio: 'pipe' });
  // Truncated: the q8 weight file loses its last byte. Corrupt: same size, one byte flipped.
  cpSync(model, join(dir, 'truncated'), { recursive: true });
  const t = join(dir, 'truncated', 'weights-q8-000.bin');
  truncateSync(t, statSync(t).size - 1);
  cpSync(model, join(dir, 'corrupt'), { recursive: true });
  const c = join(dir, 'corrupt', 'weights-q8-000.bin');
  const bytes = readFileSync(c);
  bytes[1000] ^= 0x55;
  writeFileSync(c, bytes);
  // Native CPU (Flex) embeddings of the same texts, for the Node fallback and quantized runs.
  const input = join(dir, 'texts.jsonl');
  writeFileSync(input, TEXTS.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const native = join(dir, 'native.jsonl');
  execFileSync(QZHOU, ['embed', '--backend', 'cpu', '--model', join(FIXTURES, 'tiny-qwen2'), '--document',
    '--input', input, '--output', native], { stdio: 'pipe' });
  const nativeRows = readFileSync(native, 'utf8').trim().split('\n').map((l) => JSON.parse(l).embedding);
  // A 128-wide model: its q4 pack stores the embedding table and the q/gate/up/down projections
  // as q4k. Native CPU embeddings of that pack (dequantised on load) are the browser's reference.
  writeWideModel(join(dir, 'wide-model'));
  execFileSync(QZHOU, ['export-web', '--model', join(dir, 'wide-model'), '--out', join(dir, 'wide'), '--quant', 'q4'],
    { stdio: 'pipe' });
  const wideNative = join(dir, 'wide-native.jsonl');
  execFileSync(QZHOU, ['embed', '--backend', 'cpu', '--model', join(dir, 'wide', 'manifest-q4.json'), '--document',
    '--input', input, '--output', wideNative], { stdio: 'pipe' });
  const wideNativeRows = readFileSync(wideNative, 'utf8').trim().split('\n').map((l) => JSON.parse(l).embedding);
  return { dir, nativeRows, wideNativeRows };
}

/**
 * A random 1-layer Qwen2 of width 128 (4 heads of 32, 2 key/value heads, MLP 256; weights
 * N(0, 0.02²) from a fixed seed, norms 1) with the fixture's tokenizer and vocabulary, written
 * as a model folder: wide enough for a q4 pack to store the embedding table and projections as
 * q4k (rows of whole 128-value super-blocks), which the 32-wide fixture is not.
 */
export function writeWideModel(dir) {
  mkdirSync(dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(FIXTURES, 'tiny-qwen2', 'config.json'), 'utf8'));
  Object.assign(config, { hidden_size: 128, intermediate_size: 256, num_hidden_layers: 1,
    layer_types: ['full_attention'], num_attention_heads: 4, num_key_value_heads: 2 });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) cpSync(join(FIXTURES, 'tiny-qwen2', f), join(dir, f));
  const [h, m, kv] = [128, 256, 64];
  const shapes = {
    'embed_tokens.weight': [config.vocab_size, h],
    'layers.0.input_layernorm.weight': [h], 'layers.0.post_attention_layernorm.weight': [h], 'norm.weight': [h],
    'layers.0.self_attn.q_proj.weight': [h, h], 'layers.0.self_attn.q_proj.bias': [h],
    'layers.0.self_attn.k_proj.weight': [kv, h], 'layers.0.self_attn.k_proj.bias': [kv],
    'layers.0.self_attn.v_proj.weight': [kv, h], 'layers.0.self_attn.v_proj.bias': [kv],
    'layers.0.self_attn.o_proj.weight': [h, h],
    'layers.0.mlp.gate_proj.weight': [m, h], 'layers.0.mlp.up_proj.weight': [m, h], 'layers.0.mlp.down_proj.weight': [h, m],
  };
  // xorshift64 uniforms, Box–Muller normals.
  let state = 0x9e3779b97f4a7c15n;
  const uniform = () => {
    state ^= (state << 13n) & 0xffffffffffffffffn;
    state ^= state >> 7n;
    state ^= (state << 17n) & 0xffffffffffffffffn;
    return (Number(state >> 11n) + 0.5) / 2 ** 53;
  };
  const header = {};
  const blobs = [];
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    if (name.endsWith('norm.weight')) values.fill(1);
    else for (let i = 0; i < n; i++) values[i] = 0.02 * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + n * 4] };
    blobs.push(Buffer.from(values.buffer));
    offset += n * 4;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([length, Buffer.from(json), ...blobs]));
}

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.bin': 'application/octet-stream', '.jsonl': 'application/json', '.txt': 'text/plain' };

/** Serve the repository at `/`, with `mounts` ({'/model/': dir}) taking precedence. */
export async function serve(mounts) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let base = ROOT;
    let rel = path;
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (path.startsWith(prefix)) { base = dir; rel = path.slice(prefix.length); break; }
    }
    const file = normalize(join(base, rel));
    if (!file.startsWith(base)) { res.writeHead(403).end(); return; }
    let body;
    try { body = readFileSync(file); } catch { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found'); return; }
    res.writeHead(200, { 'content-type': MIME[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** Debian's Chromium, headless, with (or without) WebGPU through its SwiftShader adapter. */
export async function launch({ webgpu = true } = {}) {
  const { chromium } = await import('playwright-core');
  const exe = process.env.CHROMIUM || '/usr/bin/chromium';
  const userDataDir = mkdtempSync(join(tmpdir(), 'qzhou-chromium-'));
  const args = ['--headless', '--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic', ...(webgpu ? ['--enable-unsafe-webgpu'] : [])];
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: exe, headless: true, ignoreDefaultArgs: true, args: [...args, '--remote-debugging-pipe'],
  });
  const page = context.pages()[0] || (await context.newPage());
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  return { context, page, logs };
}

/** `page.evaluate` with its own timeout (a Rust panic in wasm never settles a promise). */
export async function evaluate(page, fn, arg, ms, logs = []) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms; console:\n${logs.slice(-20).join('\n')}`)), ms);
  });
  try {
    return await Promise.race([page.evaluate(fn, arg), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

/** Worst cosine and worst max|Δ| over rows. */
export function compare(got, want) {
  if (got.length !== want.length) throw new Error(`row count ${got.length} vs ${want.length}`);
  let worstCos = 1, worstDiff = 0;
  got.forEach((g, i) => {
    if (g.length !== want[i].length) throw new Error(`row ${i}: ${g.length} vs ${want[i].length} dims`);
    worstCos = Math.min(worstCos, cosine(g, want[i]));
    g.forEach((v, j) => { worstDiff = Math.max(worstDiff, Math.abs(v - want[i][j])); });
  });
  return { worstCos, worstDiff };
}
