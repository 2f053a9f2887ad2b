"""MaMe Merge Map: draw which tokens MaMe merged, over the generated image."""
from __future__ import annotations

from ..mame_core import draw_merge_map
from .merge_recorder import MAP_TYPE


class MaMeMergeMap:
    DESCRIPTION = (
        "Shows MaMe's token groups over the generated image: each destination group in its own "
        "colour (destinations dotted), tokens below the threshold tau hatched grey. Connect the MaMe "
        "node's merge_map output; MaMe records only while this "
        "node is in the graph (after connecting it, change a MaMe input once so MaMe runs again)."
    )
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("map", "stats")
    OUTPUT_TOOLTIPS = ("The image with the merge groups drawn over it.", "Merge statistics of that block and step.")
    FUNCTION = "draw"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image generated with the MaMe-patched model."}),
                "merge_map": (MAP_TYPE, {"tooltip": "The merge_map output of the MaMe node."}),
                "block": ("STRING", {"default": "auto", "tooltip":
                          "Block to show, e.g. input_1 or output_9; auto is the first block MaMe merged in."}),
                "layer": ("INT", {"default": 0, "min": 0, "max": 9, "tooltip":
                          "Transformer layer inside the block (SDXL blocks have 2 or 10)."}),
                "step": ("INT", {"default": -1, "min": -1, "max": 10000, "tooltip":
                         "Sampling step to show, from 0; -1 is the last step MaMe merged at."}),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip":
                                "Which image of the batch to draw on."}),
                "opacity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                            "How strongly the group colours cover the image."}),
            }
        }

    def draw(self, image, merge_map, block, layer, step, batch_index, opacity):
        rec = merge_map.pick(block.strip(), int(layer), int(step))
        picture = image[min(int(batch_index), image.shape[0] - 1)].float().cpu()
        drawn = draw_merge_map(picture, rec.merge_map, alpha=float(opacity))
        s = rec.merge_map.stats()
        block_name = block.strip() if block.strip() not in ("", "auto") else "first merged block"
        text = (
            f"{block_name}, layer {layer}, step {rec.step} (progress {rec.progress:.3g}), grid {rec.merge_map.h}x"
            f"{rec.merge_map.w} at d{rec.level}: {s['tokens']} tokens in {s['groups']} groups "
            f"(mean {s['mean_group_size']:.2f}, max {s['max_group_size']} tokens); averaged into a destination "
            f"{s['share_merged']:.1%}, below tau {rec.merge_map.threshold:g} {s['share_below_threshold']:.1%}"
        )
        return {"ui": {"text": [text]}, "result": (drawn.unsqueeze(0).to(image.dtype), text)}
