// Page-side helper for worker.js: promise-based load()/embed() over postMessage.
export class WorkerEmbedder {
  #worker;
  #next = 0;
  #pending = new Map();

  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.#worker = new Worker(workerUrl, { type: 'module' });
    this.#worker.onmessage = ({ data }) => {
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.progress) return p.onProgress && p.onProgress(data.progress);
      this.#pending.delete(data.id);
      data.ok ? p.resolve(data.result) : p.reject(new Error(data.error));
    };
    this.#worker.onerror = (e) => {
      for (const p of this.#pending.values()) p.reject(new Error(`worker error: ${e.message}`));
      this.#pending.clear();
    };
  }

  #call(message, onProgress) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      this.#worker.postMessage({ ...message, id });
    });
  }

  /** Resolves to the embedder's info(). */
  load(url, options = {}) {
    const { onProgress, ...rest } = options;
    return this.#call({ type: 'load', url: String(url), options: rest }, onProgress);
  }

  /** Resolves to one Float32Array per text. */
  async embed(texts, options = {}) {
    const { data, dims, count } = await this.#call({ type: 'embed', texts, options });
    return Array.from({ length: count }, (_, i) => data.subarray(i * dims, (i + 1) * dims));
  }

  terminate() {
    this.#worker.terminate();
  }
}
