"""comfyui-mame: MaMe/MaRe token merging nodes for ComfyUI."""
# ComfyUI imports this folder as a package. pytest imports this file on its own when the folder's
# name is not a Python identifier (a clone named comfyui-mame); it then has no package to import from.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
