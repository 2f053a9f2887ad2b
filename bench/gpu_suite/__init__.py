"""The GPU suite: one prepared command that checks and times MaMe on a GPU (issue 26).

``bash bench/gpu_suite.sh [OUTDIR] [--device cpu --quick]`` runs ``python -m bench.gpu_suite``:
three stages (correctness, kernels, models), each with its own time budget, writing
``gpu-<stage>.json`` and ``gpu-<stage>.txt`` into OUTDIR after every record. See docs/gpu.md.

Modules, one concept each: ``report`` (budgets, records, files), ``timers`` (CUDA-event,
compiled and CUDA-graph timing), ``inputs`` (test grids), ``correctness``, ``sdpa_backend``,
``estimates`` (the cost model's figures), ``kernels``, ``models``.
"""
