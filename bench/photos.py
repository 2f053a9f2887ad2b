"""Token grids from real photographs that ship with scikit-image (no download)."""
from __future__ import annotations

import numpy as np
import torch

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "brick", "grass")


def load_photo(name: str, side: int) -> np.ndarray:
    """``side x side x 3`` float image in [0, 1] (grey photos are repeated over channels)."""
    import skimage.data
    from skimage.transform import resize

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return resize(image[..., :3], (side, side), anti_aliasing=True).astype(np.float32)


def position_table(h: int, w: int, channels: int) -> torch.Tensor:
    """``[h*w, channels]`` 2-D sine-cosine positions (a quarter of the channels each for sin y,
    cos y, sin x, cos x), scaled to unit mean square per token."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    quarter = channels // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ay, ax = y.reshape(-1, 1) * freq, x.reshape(-1, 1) * freq
    table = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=-1)
    return table * np.sqrt(2.0)


def with_position(tokens: torch.Tensor, h: int, w: int, weight: float = 1.0) -> torch.Tensor:
    """Tokens with absolute 2-D positions added before the LayerNorm, as a DiT with a position
    embedding (SD3) sees them: no two tokens are alike any more, so attention can be as sharp
    as a row on one token."""
    mixed = tokens + weight * position_table(h, w, tokens.shape[-1]).unsqueeze(0)
    return torch.nn.functional.layer_norm(mixed, mixed.shape[-1:])


def photo_tokens(name: str, grid: int, channels: int = 320, patch: int = 8, seed: int = 0) -> torch.Tensor:
    """``[1, grid*grid, channels]`` tokens: 8x8-pixel patches, a fixed random projection, LayerNorm.

    This stands in for an SD latent grid at ``grid*8`` pixels: neighbouring tokens are as
    alike as neighbouring patches of a real photo, which random weights alone cannot give."""
    image = torch.from_numpy(load_photo(name, grid * patch))
    patches = image.reshape(grid, patch, grid, patch, 3).permute(0, 2, 1, 3, 4).reshape(grid * grid, patch * patch * 3)
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(patch * patch * 3, channels, generator=gen) / np.sqrt(patch * patch * 3)
    tokens = patches @ projection
    return torch.nn.functional.layer_norm(tokens, tokens.shape[-1:]).unsqueeze(0)


def load_photo_cropped(name: str, height: int, width: int) -> np.ndarray:
    """``height x width x 3`` float image in [0, 1]: the photo's centre cropped to the aspect
    ``height:width``, then resized (so nothing is stretched)."""
    import skimage.data
    from skimage.transform import resize

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    rows, cols = image.shape[:2]
    if rows * width > cols * height:  # too tall: crop rows
        keep = cols * height // width
        image = image[(rows - keep) // 2 : (rows - keep) // 2 + keep]
    else:
        keep = rows * width // height
        image = image[:, (cols - keep) // 2 : (cols - keep) // 2 + keep]
    return resize(image, (height, width), anti_aliasing=True).astype(np.float32)


def photo_tokens_hw(name: str, h: int, w: int, channels: int = 320, patch: int = 8, seed: int = 0) -> torch.Tensor:
    """``[1, h*w, channels]`` tokens of a non-square grid (the photo cropped to the aspect, then
    resized), made as :func:`photo_tokens` makes them."""
    image = torch.from_numpy(load_photo_cropped(name, h * patch, w * patch))
    patches = image.reshape(h, patch, w, patch, 3).permute(0, 2, 1, 3, 4).reshape(h * w, patch * patch * 3)
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(patch * patch * 3, channels, generator=gen) / np.sqrt(patch * patch * 3)
    tokens = patches @ projection
    return torch.nn.functional.layer_norm(tokens, tokens.shape[-1:]).unsqueeze(0)
