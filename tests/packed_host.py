"""The registry archive (``comfy node pack``) and a fresh ComfyUI that has only that archive,
unpacked into its custom_nodes/, as a user installing from the registry gets it."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
COMFY = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry"]


def comfy_cli(*args: str) -> subprocess.CompletedProcess:
    """Run comfy-cli in the repository, as a publisher would before `comfy node publish`."""
    env = {**os.environ, "DO_NOT_TRACK": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run([*COMFY, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def build_archive(target_dir: Path) -> Path:
    """``comfy node pack`` (git-tracked files less .comfyignore), moved out of the repository."""
    made = REPO / "node.zip"
    if made.exists():
        raise RuntimeError(f"{made} exists already; remove it first")
    try:
        run = comfy_cli("node", "pack")
        if run.returncode != 0 or not made.exists():
            raise RuntimeError(f"comfy node pack failed ({run.returncode}): {run.stdout}{run.stderr}")
        target = Path(target_dir) / "node.zip"
        shutil.move(made, target)
    finally:
        made.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _host(name: str):
    before = os.environ.get("MAME_HOST")
    os.environ["MAME_HOST"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MAME_HOST", None)
        else:
            os.environ["MAME_HOST"] = before


def fresh_comfyui(archive: Path, target: Path, host: str = "2025") -> Path:
    """A pristine ComfyUI tree of ``host`` with the archive unpacked as custom_nodes/comfyui-mame and
    the generated test checkpoint linked into its models/ (nothing else of this repository)."""
    from embedded_host.hosts import lay_out_vendored
    from embedded_host.server import ensure_checkpoint, prepare_host

    with _host(host):
        checkpoint = prepare_host() / "models" / "checkpoints" / ensure_checkpoint("tiny")
        lay_out_vendored(target)
    (target / "extra_model_paths.yaml").unlink(missing_ok=True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(target / "custom_nodes" / "comfyui-mame")
    checkpoints = target / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / checkpoint.name).symlink_to(checkpoint)
    return target


def server_for(comfyui: Path, output_dir: Path, extra_args: list[str]):
    """embedded_host's ComfyServer, run on ``comfyui`` as it is (ComfyServer would otherwise link this
    repository into the embedded host's custom_nodes)."""
    from embedded_host import server

    with mock.patch.object(server, "prepare_host", return_value=comfyui):
        return server.ComfyServer(output_dir, extra_args=extra_args)
