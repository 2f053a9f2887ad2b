"""mame-batch: workflows, jobs files, overrides, sweeps, manifest and summary (no server)."""
import json

import pytest

from graphs import WORKFLOWS
from mame_batch import BatchInputError, plan_batch
from mame_batch.graph_edit import InputRef, load_workflow
from mame_batch.jobs import load_jobs, parse_sweep
from mame_batch.manifest import Manifest, unused_path
from mame_batch.summary import summarize

WF = f"{WORKFLOWS}/sd15_txt2img_mame.json"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_workflow_files(tmp_path):
    with pytest.raises(BatchInputError, match="line 1, column"):
        load_workflow(write(tmp_path, "bad.json", "{nope"))
    ui = {"nodes": [], "links": []}
    with pytest.raises(BatchInputError, match="UI-format"):
        load_workflow(write(tmp_path, "ui.json", json.dumps(ui)))
    with pytest.raises(BatchInputError, match="not found"):
        load_workflow(tmp_path / "missing.json")


def test_jobs_jsonl_and_csv(tmp_path):
    jsonl = write(tmp_path, "j.jsonl", '{"prompt": "a cat", "seed": 3, "MaMe.ratio": 0.4}\n\n# comment\n{"prompt": "a dog"}\n')
    jobs = load_jobs(jsonl)
    assert [j.fields["prompt"] for j in jobs] == ["a cat", "a dog"]
    assert jobs[0].inputs == {InputRef("MaMe", "ratio"): 0.4}
    csv = write(tmp_path, "j.csv", "prompt,seed,width,MaMe.threshold\n\"a, b\",5,512,0.7\nplain,6,,\n")
    jobs = load_jobs(csv)
    assert jobs[0].fields == {"prompt": "a, b", "seed": 5, "width": 512}
    assert jobs[0].inputs == {InputRef("MaMe", "threshold"): 0.7}
    assert jobs[1].fields == {"prompt": "plain", "seed": 6}


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"prompt": "x"}\n{"prompt": \n', r"j.jsonl:2: not valid JSON"),
        ('{"colour": "red"}\n', "unknown field 'colour'"),
        ('{"seed": "abc"}\n', "seed must be a whole number"),
        ("", "holds no jobs"),
    ],
)
def test_bad_jobs(tmp_path, text, message):
    with pytest.raises(BatchInputError, match=message):
        load_jobs(write(tmp_path, "j.jsonl", text))


def test_sweep_is_a_cartesian_product_interleaved_by_job():
    tasks = plan_batch(WF, [{"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2}],
                       ["MaMe.ratio=0,0.5", "KSampler.cfg=5,7"])
    assert len(tasks) == 8
    assert [t.job.index for t in tasks] == [0] * 4 + [1] * 4
    assert len({t.key for t in tasks}) == 8
    assert tasks[1].key == "job0000_seed1_MaMe.ratio-0_KSampler.cfg-7"
    assert tasks[4].key == "job0001_seed2_MaMe.ratio-0.5_KSampler.cfg-7"  # odd jobs run in reverse
    t = tasks[3]
    assert t.setting == {"MaMe.ratio": 0.5, "KSampler.cfg": 7}
    assert t.graph["2"]["inputs"]["ratio"] == 0.5 and t.graph["6"]["inputs"]["cfg"] == 7
    assert t.graph["3"]["inputs"]["text"] == "a" and t.graph["6"]["inputs"]["seed"] == 1
    assert t.graph["4"]["inputs"]["text"] == "blurry, low quality"  # negative untouched
    assert plan_batch(WF, [{"prompt": "a"}], ["MaMe.ratio=0.5"])[0].key == plan_batch(WF, [{"prompt": "a"}], ["MaMe.ratio=0.5"])[0].key


def test_targets_by_id_class_and_title():
    by_id = plan_batch(WF, [{}], ["6.steps=9"])[0].graph
    by_title = plan_batch(WF, [{}], ["Positive.text=hello"])[0].graph
    assert by_id["6"]["inputs"]["steps"] == 9
    assert by_title["3"]["inputs"]["text"] == "hello"


@pytest.mark.parametrize(
    "sweep,message",
    [
        (["Nope.ratio=1"], "no node 'Nope'"),
        (["MaMe.speed=1"], "has no input 'speed'; its inputs: .*ratio"),
        (["KSampler.model=1"], "is a link"),
        (["MaMe.ratio"], "must be NODE.input=value"),
        (["ratio=0.5"], "must be NODE.input"),
        (["MaMe.ratio=0", "MaMe.ratio=1"], "twice"),
    ],
)
def test_bad_overrides_fail_before_queueing(sweep, message):
    with pytest.raises(BatchInputError, match=message):
        plan_batch(WF, [{}], sweep)


def test_job_field_without_a_target_node():
    graph = load_workflow(WF)
    del graph["5"]
    for node in graph.values():
        node["inputs"].pop("latent_image", None)
    with pytest.raises(BatchInputError, match="no node for 'width'"):
        plan_batch(graph, [{"width": 512}])


def test_manifest_resume_and_never_overwrite(tmp_path):
    manifest = Manifest(tmp_path / "m.jsonl")
    manifest.append({"key": "a", "status": "ok"})
    manifest.append({"key": "b", "status": "failed"})
    with open(manifest.path, "a") as f:
        f.write('{"key": "c", "sta')  # cut short by a kill
    assert manifest.done_keys() == {"a"}
    first = tmp_path / "img.png"
    first.write_bytes(b"1")
    second = unused_path(first)
    assert second.name == "img-1.png"
    second.write_bytes(b"2")
    assert unused_path(first).name == "img-2.png"


def test_summary_speed_ratio_against_mame_off():
    records = [
        {"setting_label": "MaMe.ratio=0", "setting": {"MaMe.ratio": 0}, "status": "ok", "wall_time": 10.0},
        {"setting_label": "MaMe.ratio=0.5", "setting": {"MaMe.ratio": 0.5}, "status": "ok", "wall_time": 6.0},
        {"setting_label": "MaMe.ratio=0", "setting": {"MaMe.ratio": 0}, "status": "ok", "wall_time": 12.0},
        {"setting_label": "MaMe.ratio=0.5", "setting": {"MaMe.ratio": 0.5}, "status": "ok", "wall_time": 5.0},
        {"setting_label": "MaMe.ratio=0.5", "setting": {"MaMe.ratio": 0.5}, "status": "rejected", "wall_time": None},
    ]
    off, half = summarize(records)
    assert off["baseline"] and off["mean_s"] == 11.0
    assert half["ok"] == 2 and half["failed"] == 1
    assert half["speedup"] == pytest.approx(11.0 / 5.5)


def test_sweep_values_are_typed():
    ((_, values),) = parse_sweep(['KSampler.sampler_name=euler,"dpmpp_2m"'])
    assert values == ["euler", "dpmpp_2m"]
    ((_, values),) = parse_sweep(["MaMe.ratio=0,0.5,true"])
    assert values == [0, 0.5, True]
