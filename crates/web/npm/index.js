// qzhou-embed: QZhou / Qwen embedding models in the browser (WebGPU) and Node.js (CPU wasm).
// A thin layer over the wasm module: fetching with progress, the Cache API, checksums (checked
// in Rust), backend choice, and a transformers.js-like API.
import init, { loadEmbedder, ModelSource, WasmTokenizer, version as wasmVersion, gpuMemoryReservedBytes as wasmGpuMemoryReservedBytes } from './wasm/qzhou_web.js';

/** Quantization schemes a weight pack can have. */
export const QUANTIZATIONS = Object.freeze(['q8', 'q4', 'f16', 'f32']);
const CACHE_NAME = 'qzhou-embed-v1';
const isNode = typeof process !== 'undefined' && !!(process.versions && process.versions.node);

let wasmReady = null;
// Model construction runs one at a time: the first WebGPU load creates the page's device.
let loadChain = Promise.resolve();
let wasmLoaded = false;
/** Initialise the wasm module once (done by `Embedder.load`; call it to pass your own URL). */
export function initWasm(moduleOrPath) {
  if (!wasmReady) {
    wasmReady = (async () => {
      if (moduleOrPath) return init({ module_or_path: await moduleOrPath });
      if (isNode) {
        const { readFile } = await import('node:fs/promises');
        return init({ module_or_path: await readFile(new URL('./wasm/qzhou_web_bg.wasm', import.meta.url)) });
      }
      return init();
    })().then((exports) => { wasmLoaded = true; return exports; });
    wasmReady.catch(() => { wasmReady = null; });
  }
  return wasmReady;
}

/** Whether this environment offers a WebGPU adapter. */
export async function hasWebGPU() {
  try {
    const gpu = globalThis.navigator && globalThis.navigator.gpu;
    return !!(gpu && (await gpu.requestAdapter()));
  } catch {
    return false;
  }
}

function fail(message) {
  return new Error(`qzhou: ${message}`);
}

function joinUrl(base, name) {
  const b = String(base);
  return b.endsWith('/') ? b + name : `${b}/${name}`;
}

async function openCache(enabled) {
  if (!enabled || typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // opaque origins, private modes
  }
}

/** GET `url` (from `cache` when `key` is cached) reporting bytes through `onChunk`. */
/** A manifest entry's name must stay under the model's base URL (path segments of plain
 *  characters; no scheme, query, `..` or absolute path) and its size must be a byte count:
 *  a manifest can come from anywhere. */
function checkListedFile(f, manifestName) {
  const name = f && f.name;
  const plain = typeof name === 'string' && name.length > 0 && name.length <= 255
    && name.split('/').every((seg) => /^[A-Za-z0-9._-]+$/.test(seg) && seg !== '.' && seg !== '..');
  if (!plain) throw fail(`${manifestName}: file name ${JSON.stringify(name)} is not a plain relative file name`);
  if (!Number.isSafeInteger(f.bytes) || f.bytes < 0) {
    throw fail(`${manifestName}: ${name} has size ${JSON.stringify(f.bytes)}, not a byte count`);
  }
}

async function fetchBytes(url, { fetchFn, cache, key, onChunk, signal, limit = Infinity }) {
  if (cache && key) {
    const hit = await cache.match(key);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      onChunk(bytes.length, true);
      return bytes;
    }
  }
  let res;
  try {
    res = await fetchFn(url, { signal });
  } catch (e) {
    throw fail(`GET ${url} failed: ${e && e.message ? e.message : e}`);
  }
  if (!res.ok) throw fail(`GET ${url} failed: ${res.status} ${res.statusText}`.trimEnd());
  let bytes;
  if (res.body && res.body.getReader) {
    const reader = res.body.getReader();
    const chunks = [];
    let n = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > limit) {
        // A server (or a hostile manifest) sending more than listed: stop reading, keep nothing.
        try { await reader.cancel(); } catch { /* already closed */ }
        throw fail(`GET ${url}: more than the ${limit} bytes the manifest lists`);
      }
      chunks.push(value);
      onChunk(value.length, false);
    }
    bytes = new Uint8Array(n);
    let o = 0;
    for (const c of chunks) { bytes.set(c, o); o += c.length; }
  } else {
    bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.length > limit) throw fail(`GET ${url}: more than the ${limit} bytes the manifest lists`);
    onChunk(bytes.length, false);
  }
  if (cache && key) {
    try { await cache.put(key, new Response(bytes)); } catch { /* quota: keep going uncached */ }
  }
  return bytes;
}

function asBytes(v, what) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return new TextEncoder().encode(v);
  if (v && typeof v === 'object' && what.endsWith('.json')) return new TextEncoder().encode(JSON.stringify(v));
  throw fail(`${what} must be bytes (Uint8Array/ArrayBuffer)${what.endsWith('.json') ? ', a string or an object' : ''}`);
}

/** Fetch a model folder's pack for `quantization` into a `ModelSource`. */
async function fetchModel(base, quantization, options) {
  const fetchFn = options.fetch || globalThis.fetch;
  if (!fetchFn) throw fail('no fetch() here; pass options.fetch or in-memory files');
  const onProgress = options.onProgress || (() => {});
  const cache = await openCache(options.cache !== false);
  const manifestName = `manifest-${quantization}.json`;
  // The manifest is always fetched fresh; weight files are cached under their checksum, so a
  // changed model never mixes with stale files and a second load downloads only the manifest.
  const manifestBytes = await fetchBytes(joinUrl(base, manifestName), { fetchFn, cache: null, onChunk: () => {}, signal: options.signal });
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(manifestBytes));
  } catch (e) {
    throw fail(`${manifestName} is not JSON: ${e.message}`);
  }
  if (!manifest || typeof manifest !== 'object' || !Array.isArray(manifest.files)
      || (manifest.assets !== undefined && !Array.isArray(manifest.assets))) {
    throw fail(`${manifestName} is not a weight pack manifest (no \`files\` list)`);
  }
  const files = [...(manifest.assets || []), ...manifest.files];
  files.forEach((f) => checkListedFile(f, manifestName));
  const total = files.reduce((s, f) => s + (Number(f.bytes) || 0), 0);
  let loaded = 0;
  let fromCache = 0;
  const source = new ModelSource();
  source.add(manifestName, manifestBytes);
  // A few files at a time: bounded memory for chunk lists, still overlapping latency.
  const queue = files.slice();
  const worker = async () => {
    for (let f = queue.shift(); f; f = queue.shift()) {
      const url = joinUrl(base, f.name);
      const key = f.sha256 ? `${url}?sha256=${f.sha256}` : null;
      const bytes = await fetchBytes(url, {
        fetchFn, cache, key, signal: options.signal, limit: f.bytes,
        onChunk: (n, cached) => {
          loaded += n;
          if (cached) fromCache += n;
          onProgress({ file: f.name, loaded, total, fromCache });
        },
      });
      source.add(f.name, bytes);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  return { source, manifestName, loaded, total, fromCache };
}

/** Files given in memory: `{config, tokenizer, weights}` (safetensors) or
 *  `{config, tokenizer, manifest, files: {name: bytes}}` (a weight pack). */
function memoryModel(src) {
  const source = new ModelSource();
  if (src.config === undefined || src.tokenizer === undefined) throw fail('in-memory models need `config` and `tokenizer`');
  source.add('config.json', asBytes(src.config, 'config.json'));
  source.add('tokenizer.json', asBytes(src.tokenizer, 'tokenizer.json'));
  for (const [name, bytes] of Object.entries(src.files || {})) source.add(name, asBytes(bytes, name));
  for (const [name, bytes] of Object.entries(src.sentenceTransformers || {})) source.add(name, asBytes(bytes, name));
  let manifestName = '';
  if (src.manifest !== undefined) {
    const m = asBytes(src.manifest, 'manifest.json');
    const q = JSON.parse(new TextDecoder().decode(m)).quantization;
    manifestName = `manifest-${q}.json`;
    source.add(manifestName, m);
  } else if (src.weights !== undefined) {
    source.add('model.safetensors', asBytes(src.weights, 'model.safetensors'));
  } else {
    throw fail('in-memory models need `weights` (safetensors) or `manifest` + `files`');
  }
  return { source, manifestName };
}

/** A loaded embedding model. */
export class Embedder {
  #inner;
  #info;
  constructor(inner, info) {
    this.#inner = inner;
    this.#info = info;
  }

  /**
   * Load a model: `source` is the base URL of a folder written by `qzhou export-web`, or
   * in-memory files. Options: `quantization` ('q8' default, 'q4', 'f16', 'f32'), `backend`
   * ('auto' default: WebGPU when available, else CPU; 'webgpu'; 'cpu'), `onProgress`
   * ({file, loaded, total, fromCache}), `cache` (Cache API, default true), `fetch`, `signal`,
   * `maxLength`, `batchTokens`, `maxBatch`, `maxBufferBytes` (split weights into GPU buffers of
   * at most this many bytes; default: the device's storage-binding limit), `quantizedEmbedding`
   * (keep a q8/q4 embedding table quantised on the GPU; default true).
   */
  static async load(source, options = {}) {
    const quantization = String(options.quantization || 'q8').toLowerCase();
    if (!QUANTIZATIONS.includes(quantization)) {
      throw fail(`unsupported quantization '${options.quantization}' (expected one of ${QUANTIZATIONS.join(', ')})`);
    }
    const backendOpt = options.backend || 'auto';
    if (!['auto', 'webgpu', 'cpu'].includes(backendOpt)) {
      throw fail(`unknown backend '${backendOpt}' (expected 'auto', 'webgpu' or 'cpu')`);
    }
    await initWasm(options.wasm);
    const t0 = Date.now();
    const isUrl = typeof source === 'string' || source instanceof URL;
    const got = isUrl ? await fetchModel(source, quantization, options) : memoryModel(source || {});
    let backend = backendOpt;
    if (backend === 'auto') backend = (await hasWebGPU()) ? 'webgpu' : 'cpu';
    const loadJson = JSON.stringify({
      maxLength: options.maxLength, batchTokens: options.batchTokens, maxBatch: options.maxBatch,
      maxBufferBytes: options.maxBufferBytes, quantizedEmbedding: options.quantizedEmbedding,
      matmulKernel: options.matmulKernel,
      // Replaced by matmulKernel: passed on so that the load fails saying so.
      denseKernel: options.denseKernel, tiledKernel: options.tiledKernel,
    });
    const run = loadChain.then(() => loadEmbedder(backend, got.source, got.manifestName, loadJson));
    loadChain = run.catch(() => {});
    const inner = await run;
    const info = JSON.parse(inner.infoJson());
    info.download = isUrl ? { bytes: got.total, fromCache: got.fromCache } : null;
    info.loadMs = Date.now() - t0;
    return new Embedder(inner, info);
  }

  /** Embedding width. */
  get dims() {
    return this.#alive().dims;
  }

  /** Backend ('webgpu' | 'cpu'), adapter, quantization, pooling, normalize, attention, ... */
  info() {
    this.#alive();
    return structuredClone(this.#info);
  }

  /**
   * Embed one text or many. Options: `kind` ('query' default | 'document'), `task` (an mteb
   * task name: QZhou's instruction for it), `instruction`, `pooling` ('mean' | 'last' | 'cls'),
   * `normalize`, `promptStyle`, `promptName`. Returns one Float32Array per text (views of one buffer).
   */
  async embed(texts, options = {}) {
    const { data, dims } = await this.embedFlat(texts, options);
    const out = [];
    for (let i = 0; i < data.length / dims; i++) out.push(data.subarray(i * dims, (i + 1) * dims));
    return out;
  }

  /** Like `embed`, as one row-major Float32Array `{data, dims, count}`. */
  async embedFlat(texts, options = {}) {
    const inner = this.#alive();
    const list = typeof texts === 'string' ? [texts] : Array.from(texts || []);
    if (list.length === 0) return { data: new Float32Array(0), dims: inner.dims, count: 0 };
    list.forEach((t, i) => {
      if (typeof t !== 'string') throw fail(`text ${i} is ${typeof t}, not a string`);
    });
    const data = await inner.embed(list, JSON.stringify(options));
    return { data, dims: inner.dims, count: list.length };
  }

  /** The exact prefix put before each text for these options. */
  prefix(options = {}) {
    return this.#alive().prefix(JSON.stringify(options));
  }

  /** Free the model's memory (GPU buffers included). The embedder is unusable afterwards. */
  dispose() {
    if (this.#inner) {
      this.#inner.free();
      this.#inner = null;
    }
  }

  #alive() {
    if (!this.#inner) throw fail('this Embedder was disposed');
    return this.#inner;
  }
}

/** The model's tokenizer on its own. */
export class Tokenizer {
  #inner;
  constructor(inner) {
    this.#inner = inner;
  }

  /** From a `tokenizer.json` URL or its bytes. */
  static async load(source, { maxLength = 32768, fetch: fetchFn } = {}) {
    await initWasm();
    let bytes;
    if (typeof source === 'string' || source instanceof URL) {
      bytes = await fetchBytes(String(source), { fetchFn: fetchFn || globalThis.fetch, cache: null, onChunk: () => {} });
    } else {
      bytes = asBytes(source, 'tokenizer.json');
    }
    return new Tokenizer(new WasmTokenizer(bytes, maxLength));
  }

  /** Token ids of each text. */
  encode(texts) {
    const list = typeof texts === 'string' ? [texts] : Array.from(texts);
    const enc = this.#inner.encode(list);
    const ids = enc.ids;
    const lengths = enc.lengths;
    enc.free();
    const out = [];
    let o = 0;
    for (const n of lengths) { out.push(Array.from(ids.subarray(o, o + n))); o += n; }
    return out;
  }

  dispose() {
    if (this.#inner) { this.#inner.free(); this.#inner = null; }
  }
}

/** Cosine similarity of two vectors. */
export function cosineSimilarity(a, b) {
  if (a.length !== b.length) throw fail(`vectors differ in length (${a.length} vs ${b.length})`);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

/** Delete every cached weight file. */
export async function clearCache() {
  if (typeof caches !== 'undefined') await caches.delete(CACHE_NAME);
}

/**
 * GPU memory (bytes) the page's WebGPU device holds now, as Burn's allocator counts it;
 * `undefined` before a model was loaded on WebGPU. Disposing an embedder gives its weights back.
 */
export function gpuMemoryReservedBytes() {
  if (!wasmLoaded) return undefined;
  return wasmGpuMemoryReservedBytes();
}

/** The package version (after `await initWasm()` or a load). */
export function version() {
  if (!wasmLoaded) throw fail('the wasm module is not initialised yet: await initWasm() (or Embedder.load) first');
  return wasmVersion();
}
