"""The comparison methods as diffusers UNet patches, for the speed benchmark.

MaMe uses the product's own adapter (``mame_diffusers``) and tomesd its own
``apply_patch``; the two below are this project's small re-implementations of the
schemes, clearly labelled: ComfyUI's built-in ToMe (queries only, full resolution only)
and ToDo-style key/value pooling.
"""
from __future__ import annotations

import torch

from bench.attention_methods import TODO_POOL, _tome_functions
from mame_core import infer_grid
from mame_diffusers.adapter import _attention_blocks


def _patch(unet, levels, pre, post=None):
    shape = {}
    handles = [unet.register_forward_pre_hook(
        lambda m, a, k: shape.update(latent=tuple((a[0] if a else k["sample"]).shape)), with_kwargs=True)]
    pending = {}
    for ref in _attention_blocks(unet):
        if ref.level not in levels:
            continue

        def pre_hook(module, args, kwargs):
            grid = infer_grid(args[0].shape[1], shape["latent"])
            if grid is None:
                return None
            new_args, new_kwargs, undo = pre(args[0], grid[1], grid[2])
            if undo is not None:
                pending[id(module)] = undo
            return (new_args, *args[1:]), {**kwargs, **new_kwargs}

        def post_hook(module, args, output):
            undo = pending.pop(id(module), None)
            return output if undo is None else undo(output)

        handles.append(ref.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(ref.module.register_forward_hook(post_hook))
    return handles


def apply_tome_queries(unet, ratio: float, levels=(1,)):
    """ComfyUI's built-in ToMe scheme: merge the queries with tomesd's matcher, keep keys and
    values at full length, unmerge the output. Full resolution only, like the node."""

    def pre(x, h, w):
        merge, unmerge = _tome_functions(x, h, w, ratio)
        return merge(x), {"encoder_hidden_states": x}, unmerge

    return _patch(unet, set(levels), pre)


def apply_todo(unet, ratio: float, levels=(1,)):
    """ToDo-style: average-pool the key/value grid (2x1 for ratio 0.5, 2x2 for 0.75)."""
    fy, fx = TODO_POOL[ratio]

    def pre(x, h, w):
        b, n, c = x.shape
        pooled = torch.nn.functional.avg_pool2d(x.transpose(1, 2).reshape(b, c, h, w), (fy, fx), ceil_mode=True)
        return x, {"encoder_hidden_states": pooled.flatten(2).transpose(1, 2)}, None

    return _patch(unet, set(levels), pre)


def remove(handles) -> None:
    for handle in handles:
        handle.remove()
