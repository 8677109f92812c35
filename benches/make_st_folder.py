#!/usr/bin/env python3
"""Turn an HF Qwen2 folder (benches/make_bench_model.py's) into the sentence-transformers
folder `qzhou export` writes — bidirectional `modeling_qzhou.py` + `auto_map`, mean pooling,
Normalize, max_seq_length — so that `qzhou serve` and infinity-emb load the very same files.
The weights are hard-linked (copied if linking fails). Standard library only.

Usage: make_st_folder.py SRC OUT [MAX_SEQ_LENGTH=512]
"""

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(src: Path, out: Path, max_seq_length: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_qzhou.QZhouModel"}
    config["architectures"] = ["QZhouModel"]
    config["torch_dtype"] = "float32"
    # transformers 4 (infinity-emb pins sentence-transformers < 4) reads only a top-level
    # rope_theta, as `qzhou export` writes it.
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if "rope_theta" not in config and theta is not None:
        config["rope_theta"] = theta
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in os.listdir(src):
        if name.endswith(".safetensors") or name == "model.safetensors.index.json":
            target = out / name
            if target.exists():
                target.unlink()
            try:
                os.link(src / name, target)
            except OSError:
                shutil.copyfile(src / name, target)
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    fixture = ROOT / "tests" / "fixtures" / "tiny-qwen2"
    shutil.copyfile(fixture / "tokenizer_config.json", out / "tokenizer_config.json")
    shutil.copyfile(ROOT / "crates" / "native" / "src" / "modeling_qzhou.py", out / "modeling_qzhou.py")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 512)
