"""ComfyUI node classes of comfyui-mame (classic node API, works on 2024 and v0.8+ ComfyUI)."""
from .mame_node import MaMe
from .merge_map_node import MaMeMergeMap
from .schedule_node import MaMeBlockSchedule

NODE_CLASS_MAPPINGS = {
    "MaMe": MaMe,
    "MaMeBlockSchedule": MaMeBlockSchedule,
    "MaMeMergeMap": MaMeMergeMap,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MaMe": "MaMe Token Merging",
    "MaMeBlockSchedule": "MaMe Block Schedule",
    "MaMeMergeMap": "MaMe Merge Map",
}
