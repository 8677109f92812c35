// A module Web Worker that owns the embedder, so loading and embedding never block the page.
// Messages in:  {id, type: 'load', url, options}  |  {id, type: 'embed', texts, options}
// Messages out: {id, ok: true, result} | {id, ok: false, error}
// In an app that installed the package: import { Embedder } from 'qzhou-embed';
import { Embedder } from '../../crates/web/pkg/index.js';

let embedder = null;

self.onmessage = async ({ data }) => {
  const { id, type } = data;
  try {
    if (type === 'load') {
      if (embedder) embedder.dispose();
      const onProgress = (p) => self.postMessage({ id, progress: p });
      embedder = await Embedder.load(new URL(data.url, self.location.href).href, { ...data.options, onProgress });
      self.postMessage({ id, ok: true, result: embedder.info() });
    } else if (type === 'embed') {
      if (!embedder) throw new Error('load a model first');
      const { data: flat, dims, count } = await embedder.embedFlat(data.texts, data.options);
      // Transfer the buffer instead of copying it.
      self.postMessage({ id, ok: true, result: { data: flat, dims, count } }, [flat.buffer]);
    } else {
      throw new Error(`unknown message type '${type}'`);
    }
  } catch (e) {
    self.postMessage({ id, ok: false, error: String(e && e.message ? e.message : e) });
  }
};
