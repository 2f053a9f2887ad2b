"""MaMe/MaRe for diffusers UNet2DConditionModel pipelines: ``apply_mame`` / ``remove_mame``.

    from mame_diffusers import apply_mame, remove_mame
    apply_mame(pipe, ratio=0.5)          # a pipeline or a UNet; call again to re-configure
    image = pipe("a lighthouse at dusk").images[0]
    remove_mame(pipe)                    # the original modules, exactly

It hooks the self-attention (``attn1``) of every ``BasicTransformerBlock``: a forward
pre-hook merges its input, a forward hook restores its output, which the block then adds
to the residual. The attention module itself and its processor (SDPA, xFormers, sliced,
custom) are not touched, and the same ``mame_core`` engine as the ComfyUI node runs.
"""
from .adapter import apply_mame, mame_state, remove_mame

__all__ = ["apply_mame", "mame_state", "remove_mame"]
