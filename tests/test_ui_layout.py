"""The example workflows' layout, read from the files (fast; the browser test checks it in the
front end): no node's box, title bar included, overlaps another's."""
import json
from pathlib import Path

import pytest

from embedded_host.frontend import overlaps
from embedded_host.ui_format import TITLE_HEIGHT

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_no_node_covers_another(name):
    nodes = json.loads((EXAMPLES / name).read_text())["nodes"]
    assert not overlaps(nodes, TITLE_HEIGHT)
    mame = [n for n in nodes if n["type"] == "MaMe"]
    assert mame and all(n["size"][1] >= 300 for n in mame), "sizes come from the front end, not a default"


def test_overlap_check_sees_a_title_bar_under_the_node_above():
    above = {"id": 1, "pos": [0, 40], "size": [300, 300]}
    below = {"id": 2, "pos": [0, 360], "size": [300, 100]}  # its title bar starts at 330, inside the node above
    assert overlaps([above, below], TITLE_HEIGHT) == [(1, 2)]
    below["pos"] = [0, 380]
    assert overlaps([above, below], TITLE_HEIGHT) == []
