"""Every value checked against the server's /object_info before any work (issue 28): the checks
on their own (no server), then the batch client and the demo against a real ComfyUI server."""
import json
import os
import re
import subprocess
import sys

import pytest

from graphs import TEST_CHECKPOINT, WORKFLOWS
from mame_batch.validate import check_value, graph_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WF = f"{WORKFLOWS}/sd15_txt2img_mame.json"

INFO = {
    "MaMe": {"input": {
        "required": {"ratio": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 0.95}],
                     "mode": [["qkv", "kv"], {}],
                     "start_percent": ["FLOAT", {"min": 0.0, "max": 1.0}],
                     "end_percent": ["FLOAT", {"min": 0.0, "max": 1.0}],
                     "overrides": ["STRING", {"multiline": True}]},
        "optional": {"levels": ["COMBO", {"options": ["auto", "d1"]}]}}},
    "KSampler": {"input": {"required": {"steps": ["INT", {"min": 1, "max": 10000}],
                                        "model": ["MODEL"], "flag": ["BOOLEAN", {}]}}},
}


def mame(**inputs):
    base = {"ratio": 0.5, "mode": "qkv", "start_percent": 0.0, "end_percent": 1.0, "overrides": ""}
    return {"1": {"class_type": "MaMe", "inputs": {**base, **inputs}}}


def one_problem(graph):
    (problem,) = graph_problems(graph, INFO)
    return problem


def test_good_values_pass():
    assert graph_problems(mame(ratio=0, levels="d1", overrides="d1 = 0.5, output_3-5 = off"), INFO) == []
    assert graph_problems({"2": {"class_type": "KSampler", "inputs": {"steps": 4, "model": ["1", 0],
                                                                      "flag": True}}}, INFO) == []


@pytest.mark.parametrize("inputs,expected", [
    ({"ratio": "abc"}, "input 'ratio' = 'abc': not a number; allowed: a number from 0 to 0.95"),
    ({"ratio": 2}, "input 'ratio' = 2: above the maximum 0.95; allowed: a number from 0 to 0.95"),
    ({"ratio": -0.1}, "below the minimum 0"),
    ({"ratio": float("nan")}, "not a finite number"),
    ({"ratio": True}, "not a number"),
    ({"mode": "q"}, "input 'mode' = 'q': not one of the choices; allowed: 'qkv', 'kv'"),
    ({"levels": "d9"}, "input 'levels' = 'd9': not one of the choices; allowed: 'auto', 'd1'"),
    ({"overrides": "d3 = 0.5"}, "input 'overrides' = 'd3 = 0.5': bad schedule text: schedule entry 1"),
    ({"overrides": "d1 = 1.5"}, "bad schedule text"),
    ({"start_percent": 0.8, "end_percent": 0.2}, "start_percent 0.8 is after end_percent 0.2"),
])
def test_bad_mame_values_name_node_input_value_and_what_is_allowed(inputs, expected):
    problem = one_problem(mame(**inputs))
    assert problem.startswith("node 1 (MaMe)") and expected in problem, problem


def test_other_types():
    assert "not a whole number; allowed: a whole number from 1 to 10000" in check_value(
        "INT", {"min": 1, "max": 10000}, 2.5)
    assert check_value("INT", {"min": 1}, "3") is None  # the server converts numeric text too
    assert "allowed: true, false" in check_value("BOOLEAN", {}, "yes")
    assert "allowed: text" in check_value("STRING", {}, {"a": 1})
    assert check_value("SOMETHING_CUSTOM", {}, object()) is None  # the server decides
    many = [f"m{i}.safetensors" for i in range(40)]
    assert "(40 in all)" in check_value(many, {}, "x")
    problems = graph_problems({"9": {"class_type": "NoSuchNode", "inputs": {}}}, INFO)
    assert problems == ["node 9 (NoSuchNode): the server has no such node type (is its extension installed there?)"]


def test_schedule_check_does_not_import_torch():
    code = ("import sys; from mame_batch.validate import graph_problems; "
            "from test_batch_validate import INFO, mame; "
            "p = graph_problems(mame(overrides='nope'), INFO); assert 'bad schedule text' in p[0], p; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr


# --- against a real server -------------------------------------------------------------------


def jobs_file(tmp_path, rows):
    path = tmp_path / "jobs.jsonl"
    base = {"width": 192, "height": 192, "steps": 2, "CheckpointLoaderSimple.ckpt_name": TEST_CHECKPOINT}
    path.write_text("".join(json.dumps({**base, **row}) + "\n" for row in rows))
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mame_batch", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.e2e
@pytest.mark.parametrize("setting,expected", [
    ("MaMe.ratio=abc", "input 'ratio' = 'abc': not a number; allowed: a number from 0 to 0.95"),
    ("MaMe.ratio=0,2", "input 'ratio' = 2: above the maximum 0.95; allowed: a number from 0 to 0.95"),
    ("MaMe.mode=q", "input 'mode' = 'q': not one of the choices; allowed: 'qkv', 'kv'"),
    ("MaMe.overrides=d3=0.5", "input 'overrides' = 'd3=0.5': bad schedule text"),
    ("KSampler.sampler_name=fastest", "input 'sampler_name' = 'fastest': not one of the choices; allowed: 'euler'"),
])
def test_batch_refuses_bad_values_before_queueing(comfy, tmp_path, setting, expected):
    client, server = comfy
    out = tmp_path / "out"
    before = server.log_text().count("got prompt")
    run = cli(WF, jobs_file(tmp_path, [{"prompt": "x"}]), "--out", out, "--url", client.url, "--set", setting,
              "--warmup", "1")
    assert run.returncode == 2, run.stderr
    assert expected in run.stderr and "nothing was queued" in run.stderr, run.stderr
    assert "warm-up" not in run.stderr
    assert not (out / "manifest.jsonl").exists()
    assert server.log_text().count("got prompt") == before


@pytest.mark.e2e
def test_bad_job_fields_and_dry_run_with_a_server(comfy, tmp_path):
    client, _ = comfy
    jobs = jobs_file(tmp_path, [{"prompt": "fine", "seed": 1}, {"prompt": "bad", "steps": 0},
                                {"prompt": "bad too", "CheckpointLoaderSimple.ckpt_name": "missing.safetensors"}])
    run = cli(WF, jobs, "--out", tmp_path / "out", "--url", client.url, "--dry-run")
    assert run.returncode == 2, run.stderr
    assert "input 'steps' = 0: below the minimum 1; allowed: a whole number from 1 to 10000" in run.stderr
    assert "jobs.jsonl:2" in run.stderr
    assert "input 'ckpt_name' = 'missing.safetensors': not one of the choices; allowed:" in run.stderr
    assert TEST_CHECKPOINT in run.stderr


@pytest.mark.e2e
@pytest.mark.one_host("2024", "no server: the demo checks its flags before it starts a host")
def test_demo_refuses_bad_flags_before_starting_anything(tmp_path):
    def demo(*args):
        return subprocess.run([sys.executable, "-m", "embedded_host.demo", "--out", str(tmp_path / "o"), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    for args, expected in [(["--ratio", "abc"], "--ratio 'abc' is not a number; allowed: numbers from 0 to 0.95"),
                           (["--ratio", "2"], "--ratio 2 is out of range; allowed: numbers from 0 to 0.95"),
                           (["--steps", "0"], "--steps 0 is not allowed; allowed: a whole number from 1 to 10000"),
                           (["--width", "wide"], "--width 'wide' is not a whole number")]:
        run = demo(*args)
        assert run.returncode == 2 and expected in run.stderr, run.stderr
        assert "Starting the embedded ComfyUI" not in run.stdout and not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_demo_checks_against_the_server_before_the_warm_up(comfy, tmp_path):
    client, server = comfy
    before = server.log_text().count("got prompt")
    run = subprocess.run([sys.executable, "-m", "embedded_host.demo", "--url", client.url, "--checkpoint",
                          "no-such-model.safetensors", "--out", str(tmp_path / "o")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "input 'ckpt_name' = 'no-such-model.safetensors': not one of the choices; allowed:" in run.stderr
    assert "warm-up" not in run.stderr and server.log_text().count("got prompt") == before


@pytest.mark.e2e
def test_demo_shows_warm_up_steps_and_the_spread_of_each_setting(comfy, tmp_path):
    client, _ = comfy
    run = subprocess.run([sys.executable, "-m", "embedded_host.demo", "--url", client.url, "--checkpoint",
                          TEST_CHECKPOINT, "--width", "64", "--height", "64", "--steps", "2", "--rounds", "2",
                          "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "warm-up 1/1: running the first task once" in run.stderr and "warm-up 1/1: done in" in run.stderr
    # the timed tasks' steps too: the warm-up and the batch share one /ws connection
    assert len(re.findall(r"job\d{4}\S* step 2 of 2", run.stderr)) == 4, run.stderr
    assert "2 rounds x 2 settings = 4 timed images" in run.stdout
    for ratio in ("0", "0.5"):
        assert re.search(rf"MaMe\.ratio={ratio}: median \d+\.\ds, spread [\d.]+-[\d.]+s \([\d.]+s\) over 2 images",
                         run.stdout), run.stdout
    assert re.search(r"speed ratio with MaMe\.ratio=0\.5: \d+\.\d\dx per image, median against median", run.stdout)
