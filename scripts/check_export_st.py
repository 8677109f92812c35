"""Developer check (not CI): a `qzhou export` folder loads in sentence-transformers and embeds
like `qzhou embed`. Needs torch + sentence-transformers (e.g. the venv of test-assets.md).

    qzhou export --checkpoint RUN/step-N --out OUT --dtype f32
    python scripts/check_export_st.py OUT [QZHOU_BIN]

Prints the worst cosine between the two over the fixture texts (must be >= 0.9999).
"""

import json
import subprocess
import sys
import tempfile

import numpy as np
from sentence_transformers import SentenceTransformer

folder = sys.argv[1]
qzhou = sys.argv[2] if len(sys.argv) > 2 else "target/debug/qzhou"
texts = json.load(open("tests/fixtures/expected.json"))["texts"]

model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
model = model.float()
st = model.encode(texts, normalize_embeddings=True, batch_size=4)

with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for i, t in enumerate(texts):
        f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
out = subprocess.run(
    [qzhou, "embed", "--model", folder, "--document", "--input", f.name],
    check=True, capture_output=True, text=True,
).stdout
ours = np.array([json.loads(l)["embedding"] for l in out.splitlines()])
cos = (st * ours).sum(1) / np.linalg.norm(st, axis=1) / np.linalg.norm(ours, axis=1)
print(f"{len(texts)} texts: worst cos {cos.min():.7f}, max|d| {np.abs(st - ours).max():.2e}")
sys.exit(0 if cos.min() >= 0.9999 else 1)
