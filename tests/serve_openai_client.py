#!/usr/bin/env python3
"""`qzhou serve` called by the official `openai` Python client (and a TEI-shaped request).

Starts `qzhou serve` on a free loopback port with the tiny fixture model and checks that
  * `client.embeddings.create` (the client asks for base64 by default and decodes it itself)
    returns exactly the floats `encoding_format="float"` returns, and `qzhou embed`'s vectors;
  * `dimensions` gives unit-length prefixes; `usage.prompt_tokens` counts the tokens;
  * extra_body `input_type`/`task` give what `qzhou embed --query` / `--task` give;
  * TEI's `POST /embed` gives the same vectors; a bad request raises `openai.BadRequestError`
    with the server's message, and a wrong key `openai.AuthenticationError`;
  * SIGTERM stops the server with exit status 0.

Usage: tests/serve_openai_client.py QZHOU_BINARY   (run by .ci/run in a venv with `openai`)
"""

import json
import math
import signal
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "fixtures" / "tiny-qwen2"
TEXTS = [
    "what is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "你好，世界！今天天气很好。",
    "a",
]


def qzhou_embed(binary, texts, *flags):
    out = subprocess.run(
        [binary, "embed", "--model", str(MODEL), *flags, *texts],
        check=True, capture_output=True, text=True,
    ).stdout
    return [json.loads(line)["embedding"] for line in out.splitlines()]


def as_f32(rows):
    """JSON floats are f32 values printed shortest: round them back to f32 to compare bits."""
    return [list(struct.unpack(f"{len(r)}f", struct.pack(f"{len(r)}f", *r))) for r in rows]


def max_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v, strict=True))


def main(binary):
    server = subprocess.Popen(
        [binary, "serve", "--model", str(MODEL), "--port", "0", "--api-key", "k3y"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        base = None
        for line in server.stderr:
            if "listening on " in line:
                base = line.split("listening on ")[1].split()[0]
                break
        assert base, "qzhou serve did not start"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k3y")

        want = qzhou_embed(binary, TEXTS, "--document")
        default = client.embeddings.create(model="qzhou", input=TEXTS)  # base64 on the wire
        floats = client.embeddings.create(model="qzhou", input=TEXTS, encoding_format="float")
        got_b64 = [d.embedding for d in default.data]
        got_float = [d.embedding for d in floats.data]
        assert [d.index for d in default.data] == list(range(len(TEXTS)))
        assert got_b64 == as_f32(got_float), "base64 and float replies differ"
        assert max_diff(got_float, want) <= 1e-6, max_diff(got_float, want)
        assert default.model == str(MODEL)
        assert default.usage.prompt_tokens > len(TEXTS)
        assert default.usage.total_tokens == default.usage.prompt_tokens

        short = client.embeddings.create(model="qzhou", input=TEXTS, dimensions=8)
        for d, full in zip(short.data, want):
            norm = math.sqrt(sum(x * x for x in full[:8]))
            assert max_diff([d.embedding], [[x / norm for x in full[:8]]]) <= 1e-6

        single = client.embeddings.create(model="qzhou", input=TEXTS[1])
        assert max_diff([single.data[0].embedding], [want[1]]) <= 1e-6

        query = client.embeddings.create(model="qzhou", input=TEXTS, extra_body={"input_type": "query"})
        assert max_diff([d.embedding for d in query.data], qzhou_embed(binary, TEXTS, "--query")) <= 1e-6
        task = client.embeddings.create(
            model="qzhou", input=TEXTS, extra_body={"input_type": "document", "task": "STSBenchmark"})
        sts = qzhou_embed(binary, TEXTS, "--document", "--task", "STSBenchmark")
        assert max_diff([d.embedding for d in task.data], sts) <= 1e-6

        request = urllib.request.Request(
            f"{base}/embed", data=json.dumps({"inputs": TEXTS}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer k3y"})
        with urllib.request.urlopen(request) as r:
            tei = json.load(r)
        assert max_diff(tei, want) <= 1e-6

        try:
            client.embeddings.create(model="qzhou", input="")
            raise AssertionError("an empty string was embedded")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and "empty" in e.message, e
        try:
            openai.OpenAI(base_url=f"{base}/v1", api_key="nope").embeddings.create(model="q", input="x")
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e
        # Still serving after the errors.
        assert client.embeddings.create(model="qzhou", input=["again"]).data[0].embedding

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, "qzhou serve did not exit cleanly on SIGTERM"
        print(f"openai {openai.__version__} client against qzhou serve: ok "
              f"({len(TEXTS)} texts, max |Δ| vs qzhou embed {max_diff(got_float, want):.1e})")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main(sys.argv[1])
