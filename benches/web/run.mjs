// Browser embedding throughput: qzhou-embed (WebGPU, f32/q8/q4 packs) vs transformers.js
// (@huggingface/transformers + onnxruntime-web, WebGPU EP, the fp32 ONNX export of the same weights
// and its q8/q4 quantisations made as transformers.js models ship: quantize_onnx.py),
// in one headless Debian Chromium (SwiftShader WebGPU adapter without a GPU).
//
// usage: node benches/web/run.mjs [WORKDIR]          (WORKDIR default /tmp/webbench)
//   WORKDIR/model  the random-weight Qwen2 model of make_model.py (made if missing)
//   WORKDIR/web    its qzhou weight packs (qzhou export-web, rewritten every run)
// env: MAXLEN (128) tokens per text after truncation; ROWS (f32,q8,q4,tjs-fp32,tjs-q8,tjs-q4; also f16,
// <q>@<kernel>: qzhou with matmulKernel fixed to burn, row-tile or tiled instead of auto;
// cpu-f32, cpu-q8, ...: qzhou on its CPU wasm backend; tjs-wasm-<dtype>: transformers.js on wasm);
//      REPEATS (2) timed runs per row (the best is reported); PYTHON (/work/pyref/bin/python);
//      ORT_LOG (e.g. verbose: onnxruntime-web's log, page console kept in WORKDIR/<row>.console.log);
//      QZHOU_BIN (else <repo>/target or /work/target debug qzhou), CHROMIUM as in crates/web/tests/harness.mjs.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, evaluate, cosine, QZHOU, ROOT } from '../../crates/web/tests/harness.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const WORK = resolve(process.argv[2] || '/tmp/webbench');
const MODEL = join(WORK, 'model');
const WEB = join(WORK, 'web');
const MAXLEN = Number(process.env.MAXLEN || 128);
const REPEATS = Number(process.env.REPEATS || 2);
const ROWS = (process.env.ROWS || 'f32,q8,q4,tjs-fp32,tjs-q8,tjs-q4').split(',');
const PYTHON = process.env.PYTHON || '/work/pyref/bin/python';
// harness.mjs looks in $CARGO_TARGET_DIR or <repo>/target; this workspace builds into /work/target.
const QZ = existsSync(QZHOU) ? QZHOU : '/work/target/debug/qzhou';
const TJS_DIST = join(HERE, 'node_modules', '@huggingface', 'transformers', 'dist');
const ORT_DIST = join(HERE, 'node_modules', 'onnxruntime-web', 'dist');
const LOAD_MS = 420_000; // page load + model load + warm-up
const RUN_MS = 600_000; // one timed run

// 8 texts, each well over 128 tokens (checked below with the wasm tokenizer).
const SENTENCES = [
  'The committee reviewed the quarterly budget and decided to postpone the renovation of the east wing until next spring.',
  'Photosynthesis converts light energy into chemical energy, storing it in the bonds of glucose molecules inside the chloroplasts.',
  'She packed a thermos of coffee, two sandwiches, and a paperback novel before setting off on the long train journey north.',
  'Distributed databases trade strict consistency for availability when a network partition separates their replicas.',
  'The river had flooded the lower fields twice that year, so the farmers moved their cattle to the hills above the village.',
  'A well-designed API makes the common case easy and the rare case possible, without surprising the people who call it.',
  'Archaeologists found pottery shards, bronze pins, and a carved bone comb beneath the collapsed wall of the old granary.',
  'Interest rates rose for the third consecutive quarter, and analysts expect mortgage applications to keep falling.',
  'The orchestra tuned their instruments while the conductor studied the score one last time in the quiet of the wings.',
  'Regular exercise improves cardiovascular health, helps regulate sleep, and has measurable effects on mood and memory.',
  'The compiler inlines small functions, unrolls short loops, and removes stores whose values are never read again.',
  'Migrating birds navigate using the position of the sun, the pattern of the stars, and the magnetic field of the earth.',
];
const TEXTS = Array.from({ length: 8 }, (_, i) =>
  Array.from({ length: 9 }, (_, j) => SENTENCES[(i * 5 + j) % SENTENCES.length]).join(' '));
const WARMUP = 'A short warm-up sentence.';

function sh(cmd, args) {
  console.error(`$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
}

// (a) model folder and qzhou packs
if (!existsSync(join(MODEL, 'onnx', 'model.onnx'))) {
  sh(PYTHON, [join(HERE, 'make_model.py'), MODEL, '--max-length', String(MAXLEN)]);
}
// transformers.js' quantised files (dtype q8 -> model_quantized.onnx, q4 -> model_q4.onnx).
const ONNX_FILE = { fp32: 'model.onnx', q8: 'model_quantized.onnx', q4: 'model_q4.onnx', fp16: 'model_fp16.onnx' };
const tjsDtypes = ROWS.filter((r) => r.startsWith('tjs-')).map((r) => r.replace(/^tjs-(wasm-)?/, ''));
if (tjsDtypes.some((d) => d === 'q8' || d === 'q4')
    && !(existsSync(join(MODEL, 'onnx', ONNX_FILE.q8)) && existsSync(join(MODEL, 'onnx', ONNX_FILE.q4)))) {
  sh(PYTHON, [join(HERE, 'quantize_onnx.py'), MODEL]);
}
const tokCfg = JSON.parse(readFileSync(join(MODEL, 'tokenizer_config.json'), 'utf8'));
if (tokCfg.model_max_length !== MAXLEN) {
  // transformers.js truncates to model_max_length: keep it equal to MAXLEN.
  tokCfg.model_max_length = MAXLEN;
  writeFileSync(join(MODEL, 'tokenizer_config.json'), JSON.stringify(tokCfg, null, 2));
}
rmSync(WEB, { recursive: true, force: true });
sh(QZ, ['export-web', '--model', MODEL, '--out', WEB]);
const packBytes = (q) => JSON.parse(readFileSync(join(WEB, `manifest-${q}.json`), 'utf8')).files
  .reduce((s, f) => s + f.bytes, 0);

// (b) server + browser
const http = await serve({ '/model/': WEB + '/', '/hf/': WORK + '/', '/tjs/': TJS_DIST + '/', '/ort/': ORT_DIST + '/' });
const browser = await launch({ webgpu: true });
const { page, logs } = browser;
const external = [];
page.on('request', (r) => { if (/^(https?|wss?):/.test(r.url()) && !r.url().startsWith(http.url)) external.push(r.url()); });
const PAGE = `${http.url}/benches/web/page.html`;
async function freshPage() {
  await page.goto(PAGE);
  await page.waitForFunction(() => document.title === 'ready', null, { timeout: 30_000 });
}

const results = {};
const summary = {};
try {
  // Token counts of the texts with the package's wasm tokenizer (no truncation), and the
  // adapter that WebGPU gets.
  await freshPage();
  summary.check = await evaluate(page, async (texts) => {
    const qz = await import('/crates/web/pkg/index.js');
    const tk = await qz.Tokenizer.load('/model/tokenizer.json');
    const lens = tk.encode(texts).map((ids) => ids.length);
    const adapter = await navigator.gpu?.requestAdapter();
    const info = adapter?.info ? { vendor: adapter.info.vendor, architecture: adapter.info.architecture, description: adapter.info.description } : null;
    return { lens, adapter: info, ua: navigator.userAgent };
  }, TEXTS, 60_000, logs);
  console.error('token counts before truncation:', summary.check.lens.join(' '), '| adapter:', JSON.stringify(summary.check.adapter));
  if (Math.min(...summary.check.lens) < MAXLEN) throw new Error(`a text has fewer than ${MAXLEN} tokens`);

  for (const row of ROWS) {
    const r = {};
    results[row] = r;
    try {
      await freshPage();
      if (row.startsWith('tjs-')) {
        // tjs-<dtype> on WebGPU, tjs-wasm-<dtype> on onnxruntime-web's wasm (CPU) backend
        const [device, dtype] = row.startsWith('tjs-wasm-') ? ['wasm', row.slice(9)] : ['webgpu', row.slice(4)];
        r.packBytes = statSync(join(MODEL, 'onnx', ONNX_FILE[dtype] || `model_${dtype}.onnx`)).size;
        Object.assign(r, await evaluate(page, async ({ device, dtype, warm, ortLog }) => {
          const T = await import('/tjs/transformers.js');
          T.env.allowRemoteModels = false;
          T.env.allowLocalModels = true;
          T.env.localModelPath = '/hf/'; // a path: a full URL counts as remote
          T.env.useBrowserCache = false;
          // ORT_LOG=verbose: onnxruntime-web's own log (node placement on execution providers)
          if (ortLog) T.env.backends.onnx.logLevel = ortLog;
          T.env.backends.onnx.wasm.wasmPaths = {
            mjs: `${location.origin}/ort/ort-wasm-simd-threaded.asyncify.mjs`,
            wasm: `${location.origin}/ort/ort-wasm-simd-threaded.asyncify.wasm`,
          };
          const session_options = ortLog ? { logSeverityLevel: 0, logVerbosityLevel: 0 } : undefined;
          const ex = await T.pipeline('feature-extraction', 'model', { device, dtype, session_options });
          window.ex = ex;
          await ex([warm], { pooling: 'mean', normalize: true });
          return { ttfeMs: performance.now(), version: T.env.version, ort: T.env.backends.onnx.versions?.web,
            maxLength: ex.tokenizer.model_max_length };
        }, { device, dtype, warm: WARMUP, ortLog: process.env.ORT_LOG }, LOAD_MS, logs));
        r.times = [];
        for (let k = 0; k < REPEATS; k++) {
          const t = await evaluate(page, async (texts) => {
            const enc = window.ex.tokenizer(texts, { padding: true, truncation: true });
            const t0 = performance.now();
            const out = await window.ex(texts, { pooling: 'mean', normalize: true });
            const ms = performance.now() - t0;
            return { ms, shape: enc.input_ids.dims, rows: out.tolist() };
          }, TEXTS, RUN_MS, logs);
          r.times.push(t.ms); r.shape = t.shape; r.rows = t.rows;
        }
      } else {
        // <q> on WebGPU (matmulKernel 'auto'), <q>@<kernel> with the matmul fixed, cpu-<q> on
        // qzhou's CPU (Burn Flex) wasm backend
        const [name, matmulKernel] = row.split('@');
        const [backend, q] = name.startsWith('cpu-') ? ['cpu', name.slice(4)] : ['webgpu', name];
        r.packBytes = packBytes(q);
        Object.assign(r, await evaluate(page, async ({ q, backend, maxLength, warm, matmulKernel }) => {
          const qz = await import('/crates/web/pkg/index.js');
          const e = await qz.Embedder.load('/model/', { quantization: q, backend, maxLength, cache: false, matmulKernel });
          window.e = e;
          await e.embed([warm], { kind: 'document' });
          const info = e.info();
          return { ttfeMs: performance.now(), prefix: e.prefix({ kind: 'document' }),
            info: { backend: info.backend, matmulKernel: info.matmulKernel, attention: info.attention, pooling: info.pooling, maxLength: info.maxLength, loadMs: info.loadMs } };
        }, { q, backend, maxLength: MAXLEN, warm: WARMUP, matmulKernel }, LOAD_MS, logs));
        r.times = [];
        for (let k = 0; k < REPEATS; k++) {
          const t = await evaluate(page, async (texts) => {
            const t0 = performance.now();
            const rows = await window.e.embed(texts, { kind: 'document' });
            return { ms: performance.now() - t0, rows: rows.map((x) => Array.from(x)) };
          }, TEXTS, RUN_MS, logs);
          r.times.push(t.ms); r.rows = t.rows;
        }
      }
      if (process.env.ORT_LOG) writeFileSync(join(WORK, `${row}.console.log`), logs.join('\n'));
      r.ms = Math.min(...r.times);
      r.tokensPerS = (TEXTS.length * MAXLEN) / (r.ms / 1000);
      console.error(`${row}: ${r.times.map((t) => (t / 1000).toFixed(2)).join(', ')} s per run; ${r.tokensPerS.toFixed(1)} tok/s; ` +
        `first embedding ${(r.ttfeMs / 1000).toFixed(2)} s after navigation` + (r.info ? `; ${JSON.stringify(r.info)}` : '') +
        (r.version ? `; transformers.js ${r.version}, ort ${r.ort}, model_max_length ${r.maxLength}, input ${JSON.stringify(r.shape)}` : ''));
    } catch (err) {
      r.error = String(err?.message || err).split('\n')[0];
      console.error(`${row}: FAILED: ${err?.message || err}`);
      try { await page.goto('about:blank'); } catch { /* a hung page */ }
    }
  }
} finally {
  await browser.context.close();
  http.server.close();
}

// Agreement of the embeddings (all rows embed the same texts with mean pooling + L2 norm).
const ref = results.f32?.rows;
for (const r of Object.values(results)) {
  if (ref && r.rows) r.cosVsF32 = Math.min(...r.rows.map((row, i) => cosine(row, ref[i])));
  delete r.rows;
}

// Ratios compare like with like: the same precision (qzhou f32/q8/q4 against transformers.js
// fp32/q8/q4) on the same device (WebGPU rows against transformers.js on WebGPU, CPU (wasm) rows
// against transformers.js on onnxruntime-web's wasm backend); transformers.js rows against its
// own fp32.
const isCpu = (row) => row.startsWith('cpu-') || row.startsWith('tjs-wasm-');
const DTYPE = { f32: 'fp32', f16: 'fp16', q8: 'q8', q4: 'q4' };
const baseFor = (row) => {
  const device = isCpu(row) ? 'tjs-wasm-' : 'tjs-';
  const precision = row.startsWith('tjs-') ? 'fp32' : DTYPE[row.replace(/^cpu-/, '').split('@')[0]];
  return results[device + precision]?.tokensPerS;
};
const NAMES = { f32: 'qzhou f32', f16: 'qzhou f16', q8: 'qzhou q8', q4: 'qzhou q4' };
const qzName = (row) => { const [q, kernel] = row.split('@'); return kernel ? `${NAMES[q] || q}, ${kernel} kernel` : NAMES[q]; };
const header = ['row', 'tokens/s', 'vs transformers.js, same precision and device', 'pack bytes', 'first embedding (s)', 'timed runs (s)', 'min cos vs qzhou f32'];
const lines = Object.entries(results).map(([row, r]) => [
  qzName(row) || (row.startsWith('cpu-') ? `qzhou ${row.slice(4)} (wasm CPU)` : row.startsWith('tjs-wasm-') ? `transformers.js ${row.slice(9)} (wasm CPU)` : `transformers.js ${row.slice(4)}`),
  r.error ? `FAILED: ${r.error.slice(0, 80)}` : r.tokensPerS.toFixed(1),
  r.error || !baseFor(row) ? '-' : `${(r.tokensPerS / baseFor(row)).toFixed(2)}x`,
  String(r.packBytes ?? '-'),
  r.ttfeMs ? (r.ttfeMs / 1000).toFixed(2) : '-',
  r.times?.length ? r.times.map((t) => (t / 1000).toFixed(2)).join(', ') : '-',
  r.cosVsF32 !== undefined ? r.cosVsF32.toFixed(6) : '-',
]);
const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
const fmt = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
console.log(`\n${TEXTS.length} texts x ${MAXLEN} tokens (truncated) per timed run; tokens/s from the best of ${REPEATS} timed run(s) after a one-text warm-up; adapter ${JSON.stringify(summary.check?.adapter)}`);
console.log(fmt(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const l of lines) console.log(fmt(l));
if (external.length) console.log(`WARNING: requests left 127.0.0.1: ${[...new Set(external)].join(', ')}`);
writeFileSync(join(WORK, 'results.json'), JSON.stringify({ maxLen: MAXLEN, repeats: REPEATS, summary, results }, null, 2));
console.error(`results: ${join(WORK, 'results.json')}; root ${ROOT}`);
