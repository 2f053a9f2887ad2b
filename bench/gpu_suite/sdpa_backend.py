"""Which SDPA backend runs a given attention call: the first of flash, efficient, cudnn and
math that accepts the inputs when it is the only one allowed (``sdpa_kernel([backend])``)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

ORDER = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def backend_for(q, k, v, attn_mask=None) -> str:
    if q.device.type != "cuda":
        return "cpu (backend choice not probed off CUDA)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    refused = []
    for name in ORDER:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # each refusal warns why; the result names the one that ran
                F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            torch.cuda.synchronize()
            return name.lower()
        except RuntimeError:
            refused.append(name.lower())
    return f"none accepted ({', '.join(refused)} refused)"
