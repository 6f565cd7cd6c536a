"""LPIPS-VGG, v0.1 "lin" (Zhang et al. 2018), written in plain torch so it runs where torchvision does not import.

The network is fixed by two standard files the user supplies (nothing is downloaded):
  * torchvision's ImageNet VGG16 weights `vgg16-397923af.pth` (keys `features.0.weight` ... `features.28.bias`;
    the classifier keys are ignored), and
  * the LPIPS v0.1 linear layers `vgg.pth` (keys `lin0.model.1.weight` [1,64,1,1] ... `lin4.model.1.weight`).
Either may be a `.safetensors` conversion. Pickled files are read with `weights_only=True` only: a file that
needs anything but tensors to unpickle is refused rather than executed.

distance = sum over the taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the spatial mean of
w_l . (f0 - f1)^2, with f the channel-unit-normalised activations of the scaled input (inputs in [-1, 1]).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..inference.imaging import read_rgb8

log = logging.getLogger(__name__)

IMAGE_SIZE = 256  # the AnomalyDiffusion lineage resizes to 256x256 before LPIPS
VGG16_FILE = "vgg16-397923af.pth"
LIN_FILE = "vgg.pth"
NEEDS = (
    f"two files: torchvision's ImageNet VGG16 weights '{VGG16_FILE}' "
    f"(https://download.pytorch.org/models/{VGG16_FILE}) and the LPIPS v0.1 linear layers '{LIN_FILE}' "
    "(richzhang/PerceptualSimilarity lpips/weights/v0.1/vgg.pth, also shipped in the 'lpips' PyPI wheel at "
    "lpips/weights/v0.1/vgg.pth); give the folder holding both, or the pair (VGG16 file, vgg.pth); "
    ".safetensors conversions with the same keys are accepted"
)

# torchvision's vgg16().features: numbers are 3x3 convs (+ ReLU), "M" a 2x2 max-pool. The final pool is not needed.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAP_CHANNELS = (64, 128, 256, 512, 512)
_EPS = 1e-10


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU()]
            c = int(v)
    return nn.Sequential(*layers)


def backbone_shapes() -> dict[str, tuple[int, ...]]:
    """The `features.*` keys and shapes of torchvision's VGG16 state dict, in file order."""
    return {f"features.{k}": tuple(v.shape) for k, v in _vgg16_features().state_dict().items()}


def linear_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the LPIPS v0.1 `vgg.pth` linear-layer file."""
    return {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(_TAP_CHANNELS)}


class _Lin(nn.Module):
    """LPIPS's NetLinLayer: (dropout, 1x1 conv without bias), kept so the state dict keys match `vgg.pth`."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1. `forward(x0, x1)` gives one distance per pair; inputs are N x 3 x H x W in [-1, 1].

    Random-initialised as built; `load_lpips` fills it from the standard files.
    """

    def __init__(self):
        super().__init__()
        self.features = _vgg16_features()
        for i, c in enumerate(_TAP_CHANNELS):
            setattr(self, f"lin{i}", _Lin(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def lin_weights(self) -> list[torch.Tensor]:
        """The per-channel weights w_l of the five taps, each [C_l]."""
        return [getattr(self, f"lin{i}").model[1].weight.view(-1) for i in range(len(_TAPS))]

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The channel-unit-normalised activations at the five taps (what every distance is computed from)."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[: _TAPS[-1] + 1]):
            h = layer(h)
            if i in _TAPS:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS))
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        f0, f1 = self.taps(x0), self.taps(x1)
        total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for a, b, w in zip(f0, f1, self.lin_weights(), strict=True):
            total = total + ((a - b).pow(2) * w.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))
        return total

    def distance_matrix(self, fa: Sequence[torch.Tensor], fb: Sequence[torch.Tensor]) -> torch.Tensor:
        """All distances between two batches of `taps` outputs, [len(a), len(b)].

        mean_hw sum_c w_c (a-b)^2 is expanded to |a|_w^2 + |b|_w^2 - 2<a, b>_w so that each tap costs one matrix
        product rather than one pass per pair; float32 rounding leaves ~1e-6 where the direct form gives 0.
        """
        total = None
        for a, b, w in zip(fa, fb, self.lin_weights(), strict=True):
            hw = a.shape[2] * a.shape[3]
            wa = a * w.view(1, -1, 1, 1)
            sq_a = (wa * a).flatten(1).sum(1) / hw
            sq_b = (b * b * w.view(1, -1, 1, 1)).flatten(1).sum(1) / hw
            cross = wa.flatten(1) @ b.flatten(1).T / hw
            d = sq_a[:, None] + sq_b[None, :] - 2 * cross
            total = d if total is None else total + d
        return total


def read_state_dict(path: str | os.PathLike, argument: str, what: str = "a weight file") -> dict[str, torch.Tensor]:
    """A tensor dict from `.safetensors` or `.pth`/`.pt`/`.bin` (weights_only: a pickle that needs code is refused)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(argument, what, f"'{p}', which does not exist")
    suffix = p.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        raise InputError(argument, f"{what}, as .safetensors or .pth/.pt", f"'{p}'")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only met something that is not a tensor
        found = re.search(r"Unsupported [^.]*?(GLOBAL \S+|operand \S+)", str(exc))
        raise InputError(
            argument,
            f"{what} holding tensors only (.pth files are read with torch.load(weights_only=True))",
            f"'{p}', which holds other pickled objects ({found.group(0) if found else 'refused by weights_only'})",
        ) from exc
    except Exception as exc:  # SafetensorError, RuntimeError/EOFError for a truncated or foreign file
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(argument, what, f"'{p}', which could not be read: {type(exc).__name__}: {first}") from exc
    if not isinstance(state, Mapping):
        raise InputError(argument, f"{what} (a mapping of names to tensors)", f"'{p}' holding {type(state)}")
    return dict(state)


def check_state_dict(
    state: Mapping[str, object], expected: Mapping[str, tuple[int, ...]], argument: str, path: object, what: str
) -> None:
    """Raise InputError naming the file and the first expected key that is missing, not a tensor, or mis-shaped."""
    for key, shape in expected.items():
        if key not in state:
            near = sorted(k for k in state if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1])[:3]
            hint = f" (keys of that kind there: {near})" if near else f" ({len(state)} keys there)"
            raise InputError(argument, f"{what}, with key '{key}' {list(shape)}", f"'{path}': no key '{key}'{hint}")
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise InputError(argument, f"{what}, with key '{key}' a tensor", f"'{path}': '{key}' is {type(value)}")
        if tuple(value.shape) != tuple(shape):
            raise InputError(
                argument, f"{what}, with key '{key}' {list(shape)}", f"'{path}': '{key}' {list(value.shape)}"
            )


def resolve_files(lpips_weights: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[Path, Path]:
    """(VGG16 file, linear-layer file) from a folder holding the standard names, or from an explicit pair."""
    if isinstance(lpips_weights, (str, os.PathLike)):
        folder = Path(lpips_weights)
        if not folder.is_dir():
            raise InputError("lpips_weights", NEEDS, f"'{folder}', which is not a folder")

        def find(stems: tuple[str, ...]) -> Path | None:
            for stem in stems:
                for suffix in (".pth", ".safetensors", ".pt"):
                    if (folder / f"{stem}{suffix}").is_file():
                        return folder / f"{stem}{suffix}"
            return None

        backbone, linear = find(("vgg16-397923af", "vgg16")), find(("vgg",))
        missing = [name for name, f in ((VGG16_FILE, backbone), (LIN_FILE, linear)) if f is None]
        if missing:
            raise InputError("lpips_weights", NEEDS, f"'{folder}' without {' and '.join(missing)}")
        return backbone, linear
    files = list(lpips_weights)
    if len(files) != 2:
        raise InputError("lpips_weights", NEEDS, f"{len(files)} paths")
    return Path(files[0]), Path(files[1])


def load_lpips(
    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike], device: str | torch.device = "cpu"
) -> tuple[LPIPS, tuple[Path, Path]]:
    """The network filled from the two standard files (see `resolve_files`), checked key by key first."""
    backbone, linear = resolve_files(lpips_weights)
    net = LPIPS()
    state: dict[str, torch.Tensor] = {}
    for path, shapes, what in (
        (backbone, backbone_shapes(), f"torchvision's VGG16 state dict ({VGG16_FILE})"),
        (linear, linear_shapes(), f"the LPIPS v0.1 linear layers ({LIN_FILE})"),
    ):
        loaded = read_state_dict(path, "lpips_weights", what)
        check_state_dict(loaded, shapes, "lpips_weights", path, what)
        state.update({k: loaded[k].float() for k in shapes})
    net.load_state_dict(state, strict=True)
    if any(bool((w < 0).any()) for w in net.lin_weights()):
        log.warning("LPIPS linear weights in %s are negative somewhere: not the v0.1 release file?", linear)
    return net.to(device), (backbone, linear)


def load_image(path: str | os.PathLike, size: int = IMAGE_SIZE, argument: str = "image") -> torch.Tensor:
    """3 x size x size in [-1, 1]: RGB, resized bilinearly (PIL, as torchvision's Resize does on PIL images)."""
    rgb = Image.fromarray(read_rgb8(path, argument)).resize((size, size), Image.BILINEAR)  # the one reader
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


class PairwiseLPIPS:
    """`distance(a, b)` -> [len(a), len(b)] LPIPS matrix over image paths, the shape `ic_lpips` injects.

    Each image's taps are computed once and kept in an LRU cache of about `cache_bytes` (a 256 px image's taps are
    32 MB), so the O(n^2) part is matrix products, not network passes; past the budget, blocks are recomputed.
    """

    def __init__(
        self,
        net: LPIPS,
        size: int = IMAGE_SIZE,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        cache_bytes: int = 1 << 30,
        progress: bool = True,
        argument: str = "image",
        loader: Callable[[object], torch.Tensor] | None = None,
    ):
        self.net, self.size, self.device, self.batch_size = net.to(device), size, torch.device(device), batch_size
        self.progress, self.argument = progress, argument
        self.loader = loader or (lambda p: load_image(p, size, argument))
        per_image = 4 * sum(c * (size >> i) ** 2 for i, c in enumerate(_TAP_CHANNELS))
        self.capacity = max(1, cache_bytes // per_image)
        self.block = max(1, self.capacity // 4)
        self._cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self.forwards = 0  # network passes so far (each image once while the cache holds it)
        self._bar: tqdm | None = None

    def close(self) -> None:
        """End the progress bar and drop the cached features."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._cache.clear()

    def _taps(self, items: Sequence[object]) -> list[torch.Tensor]:
        keys = [str(i) for i in items]
        lookup = dict(zip(keys, items, strict=True))
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo and self._bar is None:
            self._bar = tqdm(total=0, desc="LPIPS features", unit="img", disable=not self.progress)
        if todo:
            self._bar.total += len(todo)
            self._bar.refresh()
        fresh: dict[str, list[torch.Tensor]] = {}
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                taps = self.net.taps(torch.stack([self.loader(lookup[k]) for k in chunk]).to(self.device))
                for n, k in enumerate(chunk):
                    fresh[k] = [t[n] for t in taps]
                self.forwards += len(chunk)
                self._bar.update(len(chunk))
        rows = []
        for k in keys:
            if k in fresh:
                rows.append(fresh[k])
                self._cache[k] = fresh[k]
            else:
                rows.append(self._cache[k])
                self._cache.move_to_end(k)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return [torch.stack([r[t] for r in rows]) for t in range(len(_TAPS))]

    def __call__(self, a: Sequence[object], b: Sequence[object]) -> np.ndarray:
        same = a is b
        out = np.zeros((len(a), len(b)), dtype=np.float64)
        with torch.inference_mode():
            for i0 in range(0, len(a), self.block):
                fa = self._taps(a[i0 : i0 + self.block])
                for j0 in range(i0 if same else 0, len(b), self.block):
                    fb = fa if same and j0 == i0 else self._taps(b[j0 : j0 + self.block])
                    d = self.net.distance_matrix(fa, fb).double().cpu().numpy()
                    out[i0 : i0 + d.shape[0], j0 : j0 + d.shape[1]] = d
                    if same:
                        out[j0 : j0 + d.shape[1], i0 : i0 + d.shape[0]] = d.T
        if same:
            np.fill_diagonal(out, 0.0)
        return out
