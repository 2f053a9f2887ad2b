"""Import the embedded ComfyUI host and this extension into the test process, the way
ComfyUI loads a custom node, to drive real ComfyUI model classes directly."""
from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def comfy_host():
    from .server import prepare_host

    host = str(prepare_host())
    if host not in sys.path:
        sys.path.insert(0, host)
    saved = sys.argv
    sys.argv = [saved[0], "--cpu", "--use-pytorch-cross-attention"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (reads --cpu once, at import)
    finally:
        sys.argv = saved
    import comfy

    return comfy


@lru_cache(maxsize=1)
def extension():
    comfy_host()
    name = "comfyui_mame_under_test"
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
