"""ComfyUI's real front end in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium): open UI-format workflows through the page's own loading path, read what
the front end made of them, queue them, take screenshots.

The browser resolves no host but loopback, so the page's calls to outside services fail at once
instead of leaving the machine."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("chromedriver",)

# One async script per call: selenium passes the callback as the last argument.
_ASYNC = """
const done = arguments[arguments.length - 1];
const run = async (...args) => { %s };
run(...Array.from(arguments).slice(0, -1)).then(done, (e) => done({error: String(e && e.stack || e)}));
"""

LOAD_AND_DESCRIBE = """
const [workflow] = args;
await app.loadGraphData(workflow);
await new Promise((r) => setTimeout(r, 300));
const known = LiteGraph.registered_node_types;
const nodes = app.graph._nodes.map((n) => {
  const data = n.constructor.nodeData || {};
  const inputs = {...(data.input && data.input.required || {}), ...(data.input && data.input.optional || {})};
  return {
    id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
    registered: n.type in known, python_module: data.python_module || null,
    widgets: (n.widgets || []).map((w) => w.name),
    tooltips: Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, (v[1] && v[1].tooltip) || null])),
  };
});
const dialogs = [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText);
return {nodes, title_height: LiteGraph.NODE_TITLE_HEIGHT, dialogs};
"""

SET_WIDGETS = """
const [values] = args;  // {node id: {widget name: value}}
for (const [id, widgets] of Object.entries(values)) {
  const node = app.graph.getNodeById(Number(id));
  for (const [name, value] of Object.entries(widgets)) {
    const w = node.widgets.find((w) => w.name === name);
    if (!w) throw new Error(`node ${id} has no widget ${name}`);
    w.value = value;
  }
}
return true;
"""

FIT_GRAPH = """
const nodes = app.graph._nodes, t = LiteGraph.NODE_TITLE_HEIGHT, c = app.canvas.canvas;
const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - t));
const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
// clear of the side bar (left), the tabs and Run button (top) and the minimap (bottom right)
const scale = Math.min(1, (c.clientWidth - 120) / (x1 - x0), (c.clientHeight - 300) / (y1 - y0));
app.canvas.ds.scale = scale;
app.canvas.ds.offset = [90 / scale - x0, 150 / scale - y0];
app.canvas.setDirty(true, true);
"""

GRAPH_TO_PROMPT = """
const {output} = await app.graphToPrompt();
return output;
"""

QUEUE = """
await app.queuePrompt(0, 1);
return true;
"""


def _which(names) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def browser_available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool(_which(CHROMIUM) and _which(CHROMEDRIVER))


class FrontEnd:
    """A headless Chromium with ComfyUI's page open at ``url``; use as a context manager."""

    def __init__(self, url: str, width: int = 1600, height: int = 1000, load_timeout: float = 120.0):
        self.url = url
        self.size = (width, height)
        self.load_timeout = load_timeout
        self.driver = None

    def __enter__(self) -> "FrontEnd":
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        binary, driver = _which(CHROMIUM), _which(CHROMEDRIVER)
        if not (binary and driver):
            raise RuntimeError("headless Chromium needs Debian's chromium and chromium-driver (scripts/setup_env.sh)")
        options = Options()
        options.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={self.size[0]},{self.size[1]}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(options=options, service=Service(driver))
        self.driver.set_script_timeout(300)
        self.driver.get(self.url)
        deadline = time.monotonic() + self.load_timeout
        ready = "return !!(window.app && app.graph && window.LiteGraph && 'MaMe' in LiteGraph.registered_node_types)"
        while not self.driver.execute_script(ready):
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"ComfyUI's page at {self.url} did not load within {self.load_timeout:.0f}s")
            time.sleep(0.25)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None

    def call(self, body: str, *args):
        result = self.driver.execute_async_script(_ASYNC % body, *args)
        if isinstance(result, dict) and "error" in result and len(result) == 1:
            raise RuntimeError(f"in the page: {result['error']}")
        return result

    def load(self, workflow: dict) -> dict:
        """Open ``workflow`` as the user's 'Open' does (``app.loadGraphData``); returns the nodes the
        front end made (pos, size, widgets, tooltips from the node definitions) and any dialogs."""
        return self.call(LOAD_AND_DESCRIBE, workflow)

    def set_widgets(self, values: dict) -> None:
        self.call(SET_WIDGETS, {str(k): v for k, v in values.items()})

    def prompt(self) -> dict:
        """The API-format prompt the page makes of the open graph (what the Queue button would send)."""
        return self.call(GRAPH_TO_PROMPT)

    def queue(self) -> None:
        """Queue the open graph as the Queue button does."""
        self.call(QUEUE)

    def screenshot(self, path: str | Path) -> None:
        """Save a picture of the page with the whole graph fitted into the canvas."""
        self.driver.execute_script(FIT_GRAPH)
        time.sleep(0.5)
        self.driver.save_screenshot(str(path))


def overlaps(nodes: list[dict], title_height: float) -> list[tuple]:
    """Pairs of nodes whose drawn boxes (title bar included) intersect."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - title_height, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes]
    hits = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]:
                hits.append((a[0], b[0]))
    return hits
