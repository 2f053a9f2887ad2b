"""ComfyUI node classes of comfyui-mame (classic node API, works on 2024 and v0.8+ ComfyUI)."""
from .mame_node import MaMe
from .schedule_node import MaMeBlockSchedule

NODE_CLASS_MAPPINGS = {
    "MaMe": MaMe,
    "MaMeBlockSchedule": MaMeBlockSchedule,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MaMe": "MaMe Token Merging",
    "MaMeBlockSchedule": "MaMe Block Schedule",
}
