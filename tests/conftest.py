import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(2)


def seeded(seed: int) -> torch.Generator:
    """Tests draw every random tensor from their own generator, never the global RNG."""
    return torch.Generator().manual_seed(seed)
