"""mame-batch end to end: the real CLI against the real embedded ComfyUI server."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from graphs import TEST_CHECKPOINT, WORKFLOWS

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WF = f"{WORKFLOWS}/sd15_txt2img_mame.json"


def jobs_file(tmp_path, rows):
    path = tmp_path / "jobs.jsonl"
    base = {"width": 192, "height": 192, "steps": 2, "CheckpointLoaderSimple.ckpt_name": TEST_CHECKPOINT}
    path.write_text("".join(json.dumps({**base, **row}) + "\n" for row in rows))
    return path


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mame_batch", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, **kwargs)


def manifest(out):
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_ratio_sweep_with_a_bad_job_in_the_middle(comfy, tmp_path):
    client, _ = comfy
    rows = [{"prompt": "a red barn", "seed": 1}, {"prompt": "broken", "seed": 2, "steps": 0},
            {"prompt": "a blue boat", "seed": 3}]
    out = tmp_path / "out"
    # a bad job field is refused with the whole batch, before anything is queued (issue 28)
    run = cli(WF, jobs_file(tmp_path, rows), "--out", out, "--url", client.url, "--set", "MaMe.ratio=0,0.5")
    assert run.returncode == 2, run.stderr
    assert "input 'steps' = 0: below the minimum 1" in run.stderr and "jobs.jsonl:2" in run.stderr
    assert manifest(out) == []
    del rows[1]
    run = cli(WF, jobs_file(tmp_path, rows), "--out", out, "--url", client.url, "--set", "MaMe.ratio=0,0.5")
    assert run.returncode == 0, run.stderr
    records = manifest(out)
    assert len(records) == 4
    good = [r for r in records if r["status"] == "ok"]
    assert len(good) == 4 and all(len(r["outputs"]) == 1 and os.path.exists(r["outputs"][0]) for r in good)
    # the summary table: the ratio-0 row is the baseline at 1.00x; the ratio-0.5 row has its own speed-up
    assert re.search(r"MaMe\.ratio=0 .* 1\.00x \(baseline\)", run.stdout), run.stdout
    assert re.search(r"MaMe\.ratio=0\.5 .* \d+\.\d\dx$", run.stdout, re.MULTILINE), run.stdout
    assert "4 images written" in run.stdout
    # progress a person can follow: each task's sampling steps (from /ws) in the log
    assert re.search(r"step 2 of 2", run.stderr), run.stderr


def test_resume_after_kill(comfy, tmp_path):
    client, _ = comfy
    jobs = jobs_file(tmp_path, [{"prompt": f"scene {i}", "seed": i} for i in range(3)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mame_batch", str(WF), str(jobs), "--out", str(out),
                             "--url", client.url, "--concurrency", "1"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(r["status"] == "ok" for r in manifest(out)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {r["key"]: r for r in manifest(out) if r["status"] == "ok"}
    assert 1 <= len(first) < 3
    kept = {p: open(p, "rb").read() for r in first.values() for p in r["outputs"]}

    run = cli(WF, jobs, "--out", out, "--url", client.url, "--resume")
    assert run.returncode == 0, run.stderr
    assert f"{len(first)} tasks already done" in run.stdout
    ok = {r["key"] for r in manifest(out) if r["status"] == "ok"}
    assert len(ok) == 3
    for path, data in kept.items():
        assert open(path, "rb").read() == data
    assert len(list(out.glob("*.png"))) == 3


def test_bad_override_fails_before_queueing(comfy, tmp_path):
    client, _ = comfy
    jobs = jobs_file(tmp_path, [{"prompt": "x"}])
    run = cli(WF, jobs, "--out", tmp_path / "out", "--url", client.url, "--set", "MaMe.speed=2")
    assert run.returncode == 2
    assert "has no input 'speed'" in run.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
