"""The batch client against a real, deliberately unreliable HTTP server (tests/flaky_comfy.py)."""
import socket
import threading
import time

from flaky_comfy import FlakyComfy
from mame_batch import run_batch
from mame_batch.progress import Progress

GRAPH = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "marker": "ok"}}}


def jobs(*markers):
    return [{"1.marker": m} for m in markers]


def quiet():
    return Progress(enabled=False)


def test_dropped_connections_and_503_are_retried(tmp_path):
    server = FlakyComfy(prompt_faults=["drop", 503, None, 503]).start()
    try:
        result = run_batch(GRAPH, jobs("a", "b", "c"), tmp_path, url=server.url, retry_for=10,
                           progress=quiet(), concurrency=2)
    finally:
        server.stop()
    assert [r["status"] for r in result.records] == ["ok", "ok", "ok"]
    assert len({p for r in result.records for p in r["outputs"]}) == 3
    assert server.requests.count("POST /prompt") == 3 + 3  # three faults, three successes


def test_server_down_at_start_then_up(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    holder = {}

    def late_start():
        time.sleep(1.5)
        holder["server"] = FlakyComfy(port=port).start()

    threading.Thread(target=late_start).start()
    try:
        result = run_batch(GRAPH, jobs("a"), tmp_path, url=f"http://127.0.0.1:{port}", retry_for=20, progress=quiet())
    finally:
        time.sleep(0.1)
        holder["server"].stop()
    assert result.records[0]["status"] == "ok"


def test_rejected_and_failed_jobs_are_recorded_and_the_batch_goes_on(tmp_path):
    server = FlakyComfy().start()
    try:
        result = run_batch(GRAPH, jobs("a", "invalid", "fail", "b"), tmp_path, url=server.url, retry_for=5,
                           progress=quiet(), concurrency=1)
    finally:
        server.stop()
    by_marker = {r["job"]["1.marker"]: r for r in result.records}
    assert by_marker["a"]["status"] == by_marker["b"]["status"] == "ok"
    assert by_marker["invalid"]["status"] == "rejected"
    assert "Value not in list" in by_marker["invalid"]["error"] and "1" in by_marker["invalid"]["node_errors"]
    assert by_marker["fail"]["status"] == "failed" and "boom" in by_marker["fail"]["error"]
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_prompt_the_server_forgets_is_queued_again(tmp_path):
    server = FlakyComfy().start()
    try:
        result = run_batch(GRAPH, jobs("forget-once"), tmp_path, url=server.url, retry_for=5, progress=quiet())
    finally:
        server.stop()
    (record,) = result.records
    assert record["status"] == "ok"
    assert server.requests.count("POST /prompt") == 2


def test_a_prompt_that_finishes_between_the_history_and_queue_reads_is_not_queued_again(tmp_path):
    server = FlakyComfy().start()
    try:
        result = run_batch(GRAPH, jobs("finish-between-reads"), tmp_path, url=server.url, retry_for=5,
                           progress=quiet())
    finally:
        server.stop()
    (record,) = result.records
    assert record["status"] == "ok" and len(record["outputs"]) == 1
    assert server.requests.count("POST /prompt") == 1


def test_resume_skips_done_tasks_and_outputs_are_never_overwritten(tmp_path):
    server = FlakyComfy().start()
    try:
        first = run_batch(GRAPH, jobs("a", "b"), tmp_path, url=server.url, progress=quiet())
        done = {p: open(p, "rb").read() for r in first.records for p in r["outputs"]}
        # The same batch again without --resume is refused rather than mixed in.
        try:
            run_batch(GRAPH, jobs("a", "b"), tmp_path, url=server.url, progress=quiet())
            raise AssertionError("expected a refusal")
        except ValueError as err:
            assert "--resume" in str(err)
        again = run_batch(GRAPH, jobs("a", "b", "c"), tmp_path, url=server.url, progress=quiet(), resume=True)
    finally:
        server.stop()
    assert again.skipped == 2 and [r["job"]["1.marker"] for r in again.records] == ["c"]
    for path, data in done.items():
        assert open(path, "rb").read() == data
    assert len(list(tmp_path.glob("*.png"))) == 3
