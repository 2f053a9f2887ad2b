"""Registry readiness: comfy-cli's validation passes, and the archive `comfy node pack` builds holds
what a user needs and nothing else. That the unpacked archive loads and runs in a fresh ComfyUI is
tested end to end in tests/test_frontend.py, which runs its browser checks on exactly that server."""
import tomllib
import zipfile

import pytest

from packed_host import REPO, build_archive, comfy_cli

pytest.importorskip("comfy_cli")

USER_FILES = {"__init__.py", "nodes", "mame_core", "example_workflows", "README.md", "LICENSE", "pyproject.toml",
              "requirements.txt", "docs"}


def test_comfy_node_validate_passes():
    run = comfy_cli("node", "validate")
    said = run.stdout + run.stderr  # rich writes some lines to stderr when not on a terminal
    assert run.returncode == 0, said
    assert "All validation checks passed" in said, said
    assert "warning" not in said.lower(), said


def test_pyproject_carries_what_the_registry_shows():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta, comfy = project["project"], project["tool"]["comfy"]
    assert meta["description"] and meta["dependencies"] == []
    assert (REPO / meta["license"]["file"]).is_file()
    assert any(c.startswith("Environment :: GPU") for c in meta["classifiers"])
    assert {"Repository", "Documentation"} <= set(meta["urls"])
    assert comfy["Icon"].endswith("docs/icon.svg") and (REPO / "docs" / "icon.svg").is_file()
    assert "ray" in " ".join(meta["optional-dependencies"]["cluster"])
    assert "mame_batch" in project["tool"]["setuptools"]["packages"]


def test_the_archive_holds_only_what_a_user_needs(tmp_path):
    names = zipfile.ZipFile(build_archive(tmp_path)).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top <= USER_FILES, f"not for users: {sorted(top - USER_FILES)}"
    for needed in ("__init__.py", "LICENSE", "pyproject.toml", "nodes/__init__.py", "mame_core/__init__.py",
                   "docs/icon.svg", "example_workflows/sd15_txt2img_mame.json"):
        assert needed in names
    assert not [n for n in names if n.endswith((".safetensors", ".pyc", ".zip"))]


def test_the_entry_point_loads_as_a_package_and_alone():
    """ComfyUI loads the folder as a package under the folder's name, which may hold a hyphen; pytest
    imports the file alone when that name is not an identifier (then it must not fail)."""
    import importlib.util
    import sys

    entry = REPO / "__init__.py"
    alone = importlib.util.spec_from_file_location("__init__", entry)
    module = importlib.util.module_from_spec(alone)
    alone.loader.exec_module(module)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")
    name = "comfyui-mame"
    spec = importlib.util.spec_from_file_location(name, entry, submodule_search_locations=[str(REPO)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
        assert "MaMe" in " ".join(package.NODE_CLASS_MAPPINGS)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
