#!/usr/bin/env python3
"""Quantise the browser benchmark's ONNX model the way transformers.js models ship (issue 17, item 1).

usage: quantize_onnx.py MODEL_DIR          (MODEL_DIR/onnx/model.onnx from make_model.py)

Writes next to model.onnx the files transformers.js loads for each `dtype`:
  model_quantized.onnx  dtype 'q8': onnxruntime's dynamic int8 quantisation (`quantize_dynamic`,
                        uint8 weights, per tensor, every op type it supports — MatMul and the
                        embedding Gather here), as transformers.js' scripts/quantize.py does for q8
  model_q4.onnx         dtype 'q4': onnxruntime's `MatMulNBitsQuantizer`, 4-bit blocks of 32,
                        symmetric, MatMul weights only (the embedding table stays fp32: the
                        quantiser's default op types), as transformers.js' q4 files are made

and prints each file's size. Needs onnx and onnxruntime (PyPI).
"""
import os
import sys

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

onnx_dir = os.path.join(sys.argv[1], "onnx")
src = os.path.join(onnx_dir, "model.onnx")
if not os.path.exists(src):
    sys.exit(f"{src} missing: run make_model.py first")

q8 = os.path.join(onnx_dir, "model_quantized.onnx")
quantize_dynamic(src, q8, weight_type=QuantType.QUInt8, per_channel=False, reduce_range=False,
                 extra_options={"EnableSubgraph": True})

q4 = os.path.join(onnx_dir, "model_q4.onnx")
quantizer = MatMulNBitsQuantizer(onnx.load(src), bits=4, block_size=32, is_symmetric=True,
                                 accuracy_level=None)
quantizer.process()
onnx.save(quantizer.model.model, q4)

for path in (src, q8, q4):
    ops = sorted({n.op_type for n in onnx.load(path, load_external_data=False).graph.node})
    print(f"{os.path.basename(path):22} {os.path.getsize(path):>11} bytes  ops: {', '.join(ops)}")
