"""Quality evaluation for users with real weights and a GPU: generate the same prompts and
seeds with and without each method and compare against the unpatched images.

Reports PSNR and SSIM against the baseline images, LPIPS when the ``lpips`` package is
installed, and CLIP score when ``--clip-model`` names a local CLIP checkpoint (a folder
for ``transformers``' CLIPModel). Images are saved side by side for inspection.

    python -m bench.quality --model /models/stable-diffusion-v1-5 --prompts prompts.txt \\
        --methods mame-qkv:0.5,mame-kv:0.5,tomesd:0.5,todo:0.5 --device cuda --dtype float16

``--model random-tiny`` (default) or ``random-sd15`` builds a random-weight pipeline, so
the command runs anywhere; its numbers say nothing about real image quality.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_PROMPTS = ["a lighthouse on a rocky coast at sunset", "a bowl of cherries on a wooden table",
                   "a portrait of an old fisherman, detailed skin"]


def load_pipeline(model: str, device: str, dtype: torch.dtype):
    if model.startswith("random-"):
        from bench.random_pipeline import random_pipeline

        return random_pipeline(model.split("-", 1)[1]).to(device=device, dtype=dtype)
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    path = Path(model)
    pipe = (StableDiffusionPipeline.from_single_file(model, torch_dtype=dtype) if path.is_file()
            else DiffusionPipeline.from_pretrained(model, torch_dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def method_patch(name: str, ratio: float):
    """(apply(pipe), undo(pipe)) for a method name."""
    from mame_diffusers import apply_mame, remove_mame

    if name.startswith("mame-"):
        return (lambda p: apply_mame(p, ratio=ratio, mode=name[5:])), remove_mame
    if name == "tomesd":
        import tomesd

        return (lambda p: tomesd.apply_patch(p, ratio=ratio)), tomesd.remove_patch
    from bench.diffusers_baselines import apply_todo, apply_tome_queries, remove

    holder = {}
    fn = {"todo": apply_todo, "comfy-tome-q": apply_tome_queries}[name]
    return (lambda p: holder.update(h=fn(p.unet, ratio))), (lambda p: remove(holder.pop("h")))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return None
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def lpips_fn():
    try:
        import lpips
    except ImportError:
        return None
    model = lpips.LPIPS(net="alex")
    to = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() * 2 - 1  # noqa: E731
    return lambda a, b: float(model(to(a), to(b)))


def clip_score_fn(path: str | None):
    if not path:
        return None
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)

    def score(image: np.ndarray, prompt: str) -> float:
        inputs = processor(text=[prompt], images=[(image * 255).astype(np.uint8)], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inputs)
        return float(100 * torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).clamp(min=0))

    return score


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random-tiny", help="diffusers folder, .safetensors file, random-tiny or random-sd15")
    p.add_argument("--prompts", help="text file, one prompt a line (default: three built-in prompts)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per prompt")
    p.add_argument("--methods", default="mame-qkv:0.5,mame-kv:0.5,tomesd:0.5,todo:0.5,comfy-tome-q:0.5")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float16" if torch.cuda.is_available() else "float32")
    p.add_argument("--clip-model", help="local CLIP folder for CLIP score")
    p.add_argument("--out", default="out/quality")
    args = p.parse_args(argv)
    torch.set_num_threads(2) if args.device == "cpu" else None
    prompts = Path(args.prompts).read_text().splitlines() if args.prompts else DEFAULT_PROMPTS
    prompts = [x.strip() for x in prompts if x.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [(m.split(":")[0], float(m.split(":")[1])) for m in args.methods.split(",")]
    pipe = load_pipeline(args.model, args.device, getattr(torch, args.dtype))
    lp, clip = lpips_fn(), clip_score_fn(args.clip_model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def generate(prompt, seed):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        start = time.perf_counter()
        image = pipe(prompt, num_inference_steps=args.steps, height=args.size, width=args.size,
                     guidance_scale=args.guidance, generator=gen, output_type="np").images[0]
        return np.clip(image, 0, 1), time.perf_counter() - start

    rows: dict[str, dict[str, list]] = {}
    for i, prompt in enumerate(prompts):
        for seed in seeds:
            base, base_t = generate(prompt, seed)
            rows.setdefault("baseline", {}).setdefault("seconds", []).append(base_t)
            if clip:
                rows["baseline"].setdefault("clip", []).append(clip(base, prompt))
            panels = [base]
            for name, ratio in methods:
                apply, undo = method_patch(name, ratio)
                apply(pipe)
                try:
                    image, t = generate(prompt, seed)
                finally:
                    undo(pipe)
                panels.append(image)
                r = rows.setdefault(f"{name} r{ratio}", {})
                r.setdefault("seconds", []).append(t)
                r.setdefault("psnr", []).append(psnr(image, base))
                if (s := ssim(image, base)) is not None:
                    r.setdefault("ssim", []).append(s)
                if lp:
                    r.setdefault("lpips", []).append(lp(image, base))
                if clip:
                    r.setdefault("clip", []).append(clip(image, prompt))
            from PIL import Image

            strip = (np.concatenate(panels, axis=1) * 255).astype(np.uint8)
            Image.fromarray(strip).save(out / f"prompt{i:02d}_seed{seed}.png")
    summary = {name: {k: statistics.fmean(v) for k, v in cols.items()} for name, cols in rows.items()}
    base_s = summary["baseline"]["seconds"]
    keys = ["seconds", "psnr", "ssim", "lpips", "clip"]
    print(f"model {args.model}, {len(prompts)} prompts x {len(seeds)} seeds, {args.steps} steps, {args.size} px, "
          f"{args.dtype} on {args.device}; images: baseline then {', '.join(f'{n} r{r}' for n, r in methods)}")
    print("| setting | " + " | ".join(keys) + " | speed-up |")
    print("| --- |" + " --- |" * (len(keys) + 1))
    for name, vals in summary.items():
        cells = [f"{vals[k]:.4g}" if k in vals else "-" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + f" | {base_s / vals['seconds']:.2f}x |")
    (out / "quality.json").write_text(json.dumps({"args": vars(args), "summary": summary}, indent=1))
    print(f"wrote {out}/quality.json and side-by-side images")


if __name__ == "__main__":
    main()
