"""Multi-server batches on a local Ray instance against real, deliberately unreliable HTTP servers
(tests/flaky_comfy.py): failover, servers coming back, dropping dead ones, faster servers doing more.
The end-to-end version with real ComfyUI servers is tests/test_cluster_batch.py."""
import json
import threading
import time

import pytest

from flaky_comfy import FlakyComfy
from mame_batch.batch import run_cluster_batch
from mame_batch.cli import main as cli_main
from mame_batch.cluster import NoServerLeft, read_servers_file
from mame_batch.errors import BatchInputError
from mame_batch.progress import Progress

ray = pytest.importorskip("ray")

GRAPH = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "marker": "ok"}}}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    from mame_batch.cluster import connect

    connect("local")
    yield
    ray.shutdown()


def jobs(n, marker="ok"):
    return [{"1.marker": f"{marker}{i}"} for i in range(n)]


class Notes(Progress):
    def __init__(self):
        super().__init__(enabled=False)
        self.notes = []

    def note(self, text):
        self.notes.append(f"{time.monotonic():.1f} {text}")


def busy(server):
    with server.lock:
        return [pid for pid in server.prompts if server.polls[pid] < server.polls_until_done]


def test_a_server_killed_mid_task_loses_nothing_and_comes_back(tmp_path):
    fast = FlakyComfy(polls_until_done=8).start()
    victim = FlakyComfy(polls_until_done=8).start()
    port = victim.port
    revived = {}

    def kill_then_revive():
        deadline = time.monotonic() + 30
        while not (len(victim.prompts) >= 3 and busy(victim)) and time.monotonic() < deadline:
            time.sleep(0.05)
        revived["in_flight_at_kill"] = len(busy(victim))
        victim.stop()
        time.sleep(1.0)
        revived["server"] = FlakyComfy(port=port, polls_until_done=3).start()

    killer = threading.Thread(target=kill_then_revive)
    killer.start()
    notes = Notes()
    try:
        result = run_cluster_batch(GRAPH, jobs(16), tmp_path, urls=[fast.url, victim.url], concurrency=2,
                                   retry_for=20, progress=notes)
    finally:
        killer.join()
        fast.stop()
        revived["server"].stop()
    assert revived["in_flight_at_kill"] >= 1
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in records) == sorted({r["key"] for r in records}) and len(records) == 16
    assert all(r["status"] == "ok" and len(r["outputs"]) == 1 for r in records)
    contents = [open(r["outputs"][0], "rb").read() for r in records]
    assert len(set(contents)) == 16, "every image is a different prompt's, none written twice"
    assert len(list(tmp_path.glob("*.png"))) == 16
    assert {r["server"] for r in records} == {fast.url, victim.url}
    assert any(r["attempts"] == 2 for r in records), "the killed server's in-flight task ran again"
    assert any("went away mid-task" in n for n in notes.notes)
    assert any("is back" in n for n in notes.notes), notes.notes
    assert revived["server"].prompts, "the revived server took tasks again"
    rows = {row["server"]: row for row in result.servers}
    assert rows["all"]["images"] == 16
    assert rows["all"]["images_per_minute"] == pytest.approx(
        rows[fast.url]["images_per_minute"] + rows[victim.url]["images_per_minute"])


def test_the_faster_server_takes_more_tasks(tmp_path):
    fast = FlakyComfy(polls_until_done=2).start()
    slow = FlakyComfy(polls_until_done=16).start()
    try:
        result = run_cluster_batch(GRAPH, jobs(10), tmp_path, urls=[slow.url, fast.url], concurrency=1,
                                   progress=Notes())
    finally:
        fast.stop()
        slow.stop()
    rows = {row["server"]: row for row in result.servers}
    assert rows[fast.url]["tasks"] > rows[slow.url]["tasks"] >= 1
    assert rows[fast.url]["tasks"] + rows[slow.url]["tasks"] == 10


def test_no_server_left_is_a_clear_error_and_the_manifest_keeps_what_was_done(tmp_path):
    a = FlakyComfy(polls_until_done=6).start()
    b = FlakyComfy(polls_until_done=6).start()

    def kill_both():
        while len(a.prompts) + len(b.prompts) < 3:
            time.sleep(0.05)
        a.stop()
        b.stop()

    killer = threading.Thread(target=kill_both)
    killer.start()
    with pytest.raises(NoServerLeft, match="no ComfyUI server left"):
        run_cluster_batch(GRAPH, jobs(8), tmp_path, urls=[a.url, b.url], concurrency=2, retry_for=2,
                          progress=Notes())
    killer.join()
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()] \
        if (tmp_path / "manifest.jsonl").exists() else []
    assert len(records) < 8


def test_servers_file_and_cli_errors(tmp_path, capsys):
    good = tmp_path / "servers.txt"
    good.write_text("# my GPUs\nhttp://127.0.0.1:8188\n\nhttp://127.0.0.1:8189  # second\n")
    assert read_servers_file(good) == ["http://127.0.0.1:8188", "http://127.0.0.1:8189"]
    bad = tmp_path / "bad.txt"
    bad.write_text("127.0.0.1:8188\n")
    with pytest.raises(BatchInputError, match="must be a server URL"):
        read_servers_file(bad)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(GRAPH))
    assert cli_main([str(wf), "--out", str(tmp_path / "o"), "--servers", str(tmp_path / "missing.txt")]) == 2
    assert "servers file not found" in capsys.readouterr().err
    assert cli_main([str(wf), "--out", str(tmp_path / "o"), "--ray", "local", "--start-servers", "1"]) == 2
    assert "--start-servers needs --comfyui" in capsys.readouterr().err
    two = ["--url", "http://127.0.0.1:1", "--url", "http://127.0.0.1:2"]
    assert cli_main([str(wf), "--out", str(tmp_path / "o"), *two, "--warmup", "1"]) == 2
    assert "apply to a single server" in capsys.readouterr().err
