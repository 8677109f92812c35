"""Bidirectional Qwen2 encoder, written next to the weights by `qzhou export`.

QZhou-Embedding runs its Qwen2 decoder with bidirectional attention: every token attends to
every real (non-padding) token. `transformers`' Qwen2Model is causal, so the exported
config.json maps AutoModel here (load with `trust_remote_code=True`, as QZhou's own release
requires). The weights and all other modules are Qwen2's.
"""

import torch
from transformers import Qwen2Model


class QZhouModel(Qwen2Model):
    def __init__(self, config):
        super().__init__(config)
        for layer in self.layers:
            layer.self_attn.is_causal = False

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        if attention_mask.dim() == 2:
            # Additive [batch, 1, seq, seq] mask: 0 where the key is a real token.
            dtype = self.embed_tokens.weight.dtype
            n = attention_mask.shape[1]
            pad = ~attention_mask.to(torch.bool)[:, None, None, :].expand(-1, 1, n, n)
            attention_mask = torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(
                pad, torch.finfo(dtype).min
            )
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )
