"""mame-batch over several real ComfyUI servers on a local Ray instance (loopback only).

Two servers render a batch; one is killed in the middle of a task; every task's image must
arrive exactly once. Then the batch is resumed on a different server, one a Ray actor starts
itself (the --start-servers path, with a CPU server here: there is no GPU on this machine, so
the actor reserves none), and nothing already done is queued again."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from graphs import TEST_CHECKPOINT, WORKFLOWS

pytest.importorskip("ray")
pytestmark = [
    pytest.mark.e2e,
    # The driver and its workers use only /prompt, /history, /queue and /view, alike on both releases; the
    # batch client's per-release paths (/ws end of prompt, /object_info's COMBO form) are tested on both
    # hosts by test_e2e_batch.py and test_batch_validate.py. In the pass without the DiT tests, to even out the
    # two passes that run_tests.sh runs side by side.
    pytest.mark.one_host("2024", "the cluster speaks only the HTTP endpoints both releases share"),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WF = f"{WORKFLOWS}/sd15_txt2img_mame.json"
FIRST_JOBS = 8


def get(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def busy_after_one(url):
    """(B is rendering, prompts B has finished); a server slow to answer (loading) counts as not yet."""
    try:
        return bool(get(url + "/queue", 5)["queue_running"]), len(get(url + "/history", 5))
    except OSError:
        return False, 0


def write_jobs(path, count):
    base = {"width": 128, "height": 128, "steps": 2, "CheckpointLoaderSimple.ckpt_name": TEST_CHECKPOINT}
    path.write_text("".join(json.dumps({**base, "prompt": f"scene {i}", "seed": 100 + i}) + "\n" for i in range(count)))
    return path


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def server_rows(stdout):
    """{server: (tasks, images, images_per_minute)} from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+\S", line)
        if m and (m.group(1).startswith("http") or m.group(1) == "all" or ":" in m.group(1)):
            rows[m.group(1)] = (int(m.group(2)), int(m.group(3)), float(m.group(4)))
    return rows


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster-batch")


@pytest.fixture(scope="module")
def killed_run(comfy, batch_dir):
    """Server A (the shared test server) and server B; B is killed while rendering its second task."""
    from embedded_host.server import ComfyServer

    client_a, _ = comfy
    b_dir = batch_dir / "server-b"
    server_b = ComfyServer(b_dir, extra_args=["--use-pytorch-cross-attention", "--temp-directory", str(b_dir / "temp")])
    server_b.start()
    jobs = write_jobs(batch_dir / "jobs.jsonl", FIRST_JOBS)
    out = batch_dir / "out"
    log = open(batch_dir / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "mame_batch", WF, str(jobs), "--out", str(out), "--url", client_a.url,
         "--url", server_b.url, "--concurrency", "1", "--retry-for", "5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    kill = {}
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and "at" not in kill:
            running, done = busy_after_one(server_b.url)
            if running and done >= 1:
                time.sleep(0.5)  # into the sampling steps of its second task
                kill.update(at=time.monotonic(), done_before=busy_after_one(server_b.url)[1] or done)
                os.kill(server_b.process.pid, signal.SIGKILL)
                server_b.process.wait()
            time.sleep(0.1)
        stdout, _ = driver.communicate(timeout=600)
    finally:
        log.close()
        server_b.stop()
        if driver.poll() is None:
            driver.kill()
    return {"rc": driver.returncode, "stdout": stdout, "stderr": (batch_dir / "driver.log").read_text(),
            "out": out, "jobs": jobs, "a": client_a.url, "b": server_b.url, "kill": kill}


def test_two_servers_one_killed_mid_task_every_image_exactly_once(killed_run):
    run = killed_run
    assert run["kill"], "server B never got to a second task"
    assert run["rc"] == 0, run["stderr"][-3000:]
    records = manifest(run["out"])
    assert len(records) == FIRST_JOBS and len({r["key"] for r in records}) == FIRST_JOBS
    assert all(r["status"] == "ok" and len(r["outputs"]) == 1 and os.path.exists(r["outputs"][0]) for r in records)
    assert sorted(p.name for p in run["out"].glob("*.png")) == sorted(os.path.basename(r["outputs"][0]) for r in records)
    by_server = {url: [r for r in records if r["server"] == url] for url in (run["a"], run["b"])}
    # B's records are tasks B finished and the driver fetched before the kill; the one it was
    # rendering (and any finished one not fetched yet) ran again on A.
    assert 1 <= len(by_server[run["b"]]) <= run["kill"]["done_before"]
    assert len(by_server[run["a"]]) == FIRST_JOBS - len(by_server[run["b"]])
    rerun = [r for r in records if r["attempts"] > 1]
    assert rerun and all(r["server"] == run["a"] for r in rerun), "the task B was rendering ran again on A"
    assert "went away mid-task" in run["stderr"]
    rows = server_rows(run["stdout"])
    assert rows["all"][1] == FIRST_JOBS and rows[run["a"]][1] + rows[run["b"]][1] == FIRST_JOBS
    print("\nserver figures:\n" + run["stdout"].split("server", 1)[-1])


def test_resume_on_a_different_set_of_servers_queues_nothing_done(killed_run, comfy):
    from embedded_host.server import prepare_host

    run = killed_run
    client_a, _ = comfy
    kept = {p: open(p, "rb").read() for r in manifest(run["out"]) for p in r["outputs"]}
    history_before = set(get(client_a.url + "/history"))
    jobs = write_jobs(run["jobs"], FIRST_JOBS + 2)
    resumed = subprocess.run(
        [sys.executable, "-m", "mame_batch", WF, str(jobs), "--out", str(run["out"]), "--resume",
         "--ray", "local", "--start-servers", "1", "--comfyui", str(prepare_host()),
         "--gpus-per-server", "0", "--server-arg=--cpu", "--server-arg=--use-pytorch-cross-attention"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{FIRST_JOBS} tasks already done" in resumed.stdout
    records = manifest(run["out"])
    new = records[FIRST_JOBS:]
    assert len(new) == 2 and {r["key"] for r in new}.isdisjoint(r["key"] for r in records[:FIRST_JOBS])
    assert all(r["status"] == "ok" for r in new)
    assert set(get(client_a.url + "/history")) == history_before, "the first run's servers are not used"
    rows = server_rows(resumed.stdout)
    started = [name for name in rows if name != "all"]
    assert len(started) == 1 and rows[started[0]][:2] == (2, 2), "only the two new tasks were queued"
    assert {r["server"] for r in new} == {started[0]}
    for path, data in kept.items():
        assert open(path, "rb").read() == data
    assert len(list(run["out"].glob("*.png"))) == FIRST_JOBS + 2
