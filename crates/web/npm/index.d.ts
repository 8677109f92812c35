/** Quantization schemes a weight pack can have. */
export declare const QUANTIZATIONS: readonly ['q8', 'q4', 'f16', 'f32'];
export type Quantization = 'q8' | 'q4' | 'f16' | 'f32';
export type Backend = 'auto' | 'webgpu' | 'cpu';
type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView;

export interface Progress {
  /** File being downloaded. */
  file: string;
  /** Bytes loaded so far (all files). */
  loaded: number;
  /** Bytes of all files, from the manifest. */
  total: number;
  /** Of `loaded`, bytes served from the browser cache. */
  fromCache: number;
}

export interface LoadOptions {
  /** Weight pack to load (default 'q8'). */
  quantization?: Quantization;
  /** 'auto' (default): WebGPU when an adapter exists, else the CPU wasm backend. */
  backend?: Backend;
  onProgress?: (p: Progress) => void;
  /** Keep weight files in the Cache API (default true). */
  cache?: boolean;
  fetch?: typeof fetch;
  signal?: AbortSignal;
  /** Max tokens per text (default: the model folder's, else 8192). */
  maxLength?: number;
  /** Padded tokens per forward pass (default 16384). */
  batchTokens?: number;
  /** Texts per forward pass (default 64). */
  maxBatch?: number;
  /**
   * Largest GPU buffer in bytes (default: the device's `maxStorageBufferBindingSize`): bigger
   * weights (e.g. a 7B model's embedding table) are split by rows across several buffers.
   */
  maxBufferBytes?: number;
  /**
   * Keep a q8/q4 pack's token-embedding table quantised on the GPU and dequantise only the
   * rows looked up (default true; WebGPU only). `false` dequantises it to f32 at load:
   * 4–8× the memory (2.2 GB for a 7B model's table).
   */
  quantizedEmbedding?: boolean;
  /**
   * Which matmul runs the projections on WebGPU. `'auto'` (default): the fastest of qzhou's
   * WGSL kernels (row tile; tiled through workgroup memory) and, for f32 weights, Burn's
   * generated matmul, measured on this GPU the first time each weight format and shape is met
   * — in the background: those first calls run the row tile, and the measurement's runs
   * share the GPU with them (on a software adapter such as SwiftShader the first large batch
   * takes several times longer). `'burn'` (q8/q4: dequantise, then
   * Burn's matmul), `'row-tile'`, `'tiled'` fix one. Applies to every model of the page.
   * (Replaces `denseKernel` / `tiledKernel`, which now reject.)
   */
  matmulKernel?: 'auto' | 'burn' | 'row-tile' | 'tiled';
  /** The .wasm file's URL or bytes, if it is not next to the package's JS. */
  wasm?: string | URL | Bytes;
}

/** A model in memory: a safetensors checkpoint, or a weight pack. */
export interface InMemoryModel {
  config: Bytes | string | object;
  tokenizer: Bytes | string | object;
  /** `model.safetensors` bytes. */
  weights?: Bytes;
  /** A pack's manifest (bytes, string or object) with its `files` by name. */
  manifest?: Bytes | string | object;
  files?: Record<string, Bytes>;
  /** Optional sentence-transformers files by relative name (`1_Pooling/config.json`, ...). */
  sentenceTransformers?: Record<string, Bytes>;
}

export interface EmbedOptions {
  /** 'query' (default: gets the instruction prefix) or 'document'. */
  kind?: 'query' | 'document';
  /** An mteb task name; QZhou's instruction for it (e.g. 'FiQA2018', 'T2Retrieval'). */
  task?: string;
  /** An explicit instruction (wins over `task`). */
  instruction?: string;
  pooling?: 'mean' | 'last' | 'cls';
  normalize?: boolean;
  promptStyle?: 'space' | 'no-space';
  /** A named prompt of the model folder (config_sentence_transformers.json), or
   *  'query' | 'document' | 'passage'; wins over kind, task and instruction. */
  promptName?: string;
}

export interface EmbedderInfo {
  backend: 'webgpu' | 'cpu';
  adapter: Record<string, unknown>;
  quantization: Quantization;
  dims: number;
  pooling: string;
  normalize: boolean;
  attention: string;
  maxLength: number;
  version: string;
  /** The `matmulKernel` load option in force (`null` on the CPU backend, which has none). */
  matmulKernel: 'auto' | 'burn' | 'row-tile' | 'tiled' | null;
  /** How the weights sit on the device. */
  deviceWeights: {
    quantizedProjections: number;
    denseProjections: number;
    splitProjections: number;
    projectionBuffers: number;
    embeddingBuffers: number;
    /** 32 (f32), or 8 / 4 when the table stays quantised on the GPU. */
    embeddingBits: number;
    /** How the table sits on the GPU: 'f32', 'q8', 'q4' or 'q4k' (q4 packs' tables of a width
     *  that is a multiple of 128: 16-value sub-blocks, 5.25 bits per weight). */
    embeddingFormat: 'f32' | 'q8' | 'q4' | 'q4k';
    /** GPU bytes of the embedding table (values plus block scales). */
    embeddingBytes: number;
  };
  download: { bytes: number; fromCache: number } | null;
  loadMs: number;
}

export declare class Embedder {
  /** Load from the base URL of a folder written by `qzhou export-web`, or from memory. */
  static load(source: string | URL | InMemoryModel, options?: LoadOptions): Promise<Embedder>;
  readonly dims: number;
  info(): EmbedderInfo;
  /** One Float32Array per text. */
  embed(texts: string | string[], options?: EmbedOptions): Promise<Float32Array[]>;
  /** All vectors in one row-major array. */
  embedFlat(texts: string | string[], options?: EmbedOptions): Promise<{ data: Float32Array; dims: number; count: number }>;
  /** The prefix put before each text for these options. */
  prefix(options?: EmbedOptions): string;
  /** Free the model (GPU buffers included). */
  dispose(): void;
}

export declare class Tokenizer {
  static load(source: string | URL | Bytes, options?: { maxLength?: number; fetch?: typeof fetch }): Promise<Tokenizer>;
  encode(texts: string | string[]): number[][];
  dispose(): void;
}

export declare function initWasm(moduleOrPath?: string | URL | Bytes): Promise<unknown>;
export declare function hasWebGPU(): Promise<boolean>;
export declare function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number;
export declare function clearCache(): Promise<void>;
/** GPU memory (bytes) the page's WebGPU device holds now; undefined before a WebGPU load. */
export declare function gpuMemoryReservedBytes(): number | undefined;
export declare function version(): string;
