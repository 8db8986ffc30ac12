"""Pretrained weights by name: torchvision's published files, downloaded once into the torch hub cache.

``--pretrained imagenet`` (ResNet-18/34/50, and the 2D backbones of single_frame, late_fusion,
early_fusion; r3d_18 by I3D inflation, see :mod:`twostream.models.inflate`) and ``--pretrained
kinetics400`` (r3d_18, r2plus1d_18) name the files torchvision publishes (e.g. ``resnet18-f37072fd.pth``);
any other value is the path of a state dict, as before. Two-stream networks start from ImageNet weights
(Simonyan & Zisserman 2014; the temporal stream by TSN's cross-modality initialisation, Wang et al. 2016),
which is how the published UCF101 / HMDB51 numbers were reached.

A download goes to ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), where torchvision
keeps the same files, so a file torchvision already fetched is used as it is. As torchvision does, the
hexadecimal part of the file name (``f37072fd``) is a prefix of the file's SHA-256: a download that does
not match is refused and removed, and so is a cached file that does not. The file is written under a
temporary name and renamed when complete (:func:`flowprep.store.atomic_path`). The base URL is
``https://download.pytorch.org/models/``, or ``$TWOSTREAM_WEIGHTS_URL``, or the ``base_url`` argument
(a mirror, or a local server in the tests). Loading uses ``torch.load(weights_only=True)``: a file that
carries code is refused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from flowprep.store import atomic_path

from .errors import ConfigError
from .models import VideoResNet, inflate_state_dict, load_state, read_state_dict

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
BASE_URL_ENV = "TWOSTREAM_WEIGHTS_URL"
_HASH = re.compile(r"-([a-f0-9]+)\.")


@dataclass(frozen=True)
class Weights:
    """One published weights file.

    Attributes:
        file: file name, whose ``-<hex>.`` part is a prefix of its SHA-256 (torchvision's convention).
        arch: the architecture whose state dict the file holds (``resnet18``, ``r3d_18``, ...).
        dataset: what it was trained on (``imagenet``, ``kinetics400``).
    """

    file: str
    arch: str
    dataset: str

    @property
    def hash_prefix(self) -> str:
        m = _HASH.search(self.file)
        if m is None:
            raise ConfigError(f"{self.file}: no '-<hex>.' hash prefix in the file name")
        return m.group(1)

    def url(self, base_url: str | None = None) -> str:
        base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        return base.rstrip("/") + "/" + self.file


# torchvision's published files (IMAGENET1K_V1 for the ResNets, KINETICS400_V1 for the video ResNets).
FILES: dict[str, Weights] = {w.file: w for w in (
    Weights("resnet18-f37072fd.pth", "resnet18", "imagenet"),
    Weights("resnet34-b627a593.pth", "resnet34", "imagenet"),
    Weights("resnet50-0676ba61.pth", "resnet50", "imagenet"),
    Weights("r3d_18-b3b3357e.pth", "r3d_18", "kinetics400"),
    Weights("r2plus1d_18-91a641e6.pth", "r2plus1d_18", "kinetics400"),
)}

# --pretrained NAME -> for each --arch, the file to start from. The 2D-backbone video models use their
# default backbone (resnet18); r3d_18 gets ResNet-18 inflated to 3D (I3D).
PRETRAINED: dict[str, dict[str, str]] = {
    "imagenet": {
        "resnet18": "resnet18-f37072fd.pth",
        "resnet34": "resnet34-b627a593.pth",
        "resnet50": "resnet50-0676ba61.pth",
        "single_frame": "resnet18-f37072fd.pth",
        "late_fusion": "resnet18-f37072fd.pth",
        "early_fusion": "resnet18-f37072fd.pth",
        "r3d_18": "resnet18-f37072fd.pth",
    },
    "kinetics400": {
        "r3d_18": "r3d_18-b3b3357e.pth",
        "r2plus1d_18": "r2plus1d_18-91a641e6.pth",
    },
}


class PretrainedError(ConfigError):
    """Weights that cannot be had: an unknown name, a failed or corrupt download. The message says what to do."""


def weights_for(name: str, arch: str) -> Weights:
    """The published file that ``--pretrained name`` means for ``arch``.

    Raises:
        PretrainedError: an unknown name, or no such weights for this arch (the message lists the choices).
    """
    if name not in PRETRAINED:
        raise PretrainedError(f"--pretrained {name!r}: not a file and not a known name; names: "
                              f"{', '.join(PRETRAINED)}")
    files = PRETRAINED[name]
    if arch not in files:
        have = [n for n, f in PRETRAINED.items() if arch in f]
        raise PretrainedError(f"no {name} weights for --arch {arch}; for {name}: {', '.join(files)}"
                              + (f"; for {arch}: {', '.join(have)}" if have else ""))
    return FILES[files[arch]]


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: ``$TORCH_HOME/hub/checkpoints``, torchvision's weights cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(weights: Weights, *, base_url: str | None = None, directory: str | Path | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """The local path of ``weights``, downloaded into the cache if it is not there yet.

    Args:
        weights: the file to get.
        base_url: where to download from (default: ``$TWOSTREAM_WEIGHTS_URL`` or download.pytorch.org).
        directory: the cache (default: :func:`cache_dir`).
        progress: show a progress bar of bytes while downloading.
        timeout: seconds to wait for the server to answer.

    Raises:
        PretrainedError: offline or the server fails (the message names the URL and where to put the
            file by hand), a truncated download, or a SHA-256 that does not start with the file's prefix.
    """
    directory = Path(directory) if directory is not None else cache_dir()
    dst = directory / weights.file
    prefix = weights.hash_prefix
    if dst.is_file():
        if sha256_file(dst).startswith(prefix):
            return dst
        log.warning("%s: cached file does not match its hash prefix %s; removed, downloading it again", dst, prefix)
        dst.unlink()
    url = weights.url(base_url)
    with atomic_path(dst) as tmp:  # on any error the temporary file is removed and dst left as it was
        digest = _fetch(url, tmp, progress, timeout, dst)
        if not digest.startswith(prefix):
            raise PretrainedError(f"{url}: the downloaded file's SHA-256 is {digest[:16]}..., which does not "
                                  f"start with {prefix} as its name says: corrupt or not the published file; "
                                  "refused and removed")
    log.info("downloaded %s -> %s", url, dst)
    return dst


def _fetch(url: str, out: Path, progress: bool, timeout: float, dst: Path) -> str:
    """Stream ``url`` into ``out``; returns the SHA-256 hex digest of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "twostream"}),
                                    timeout=timeout) as r, open(out, "wb") as f:
            size = r.headers.get("Content-Length")
            size = int(size) if size is not None else None
            done = 0
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dst.name,
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: r.read(1 << 16), b""):
                    f.write(block)
                    h.update(block)
                    done += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise PretrainedError(f"cannot download {url} ({reason}). Offline? Fetch that URL on another machine "
                              f"and put the file at {dst} (the torch hub cache; set TORCH_HOME to move it), "
                              "or pass the file's path to --pretrained") from None
    if size is not None and done != size:
        raise PretrainedError(f"{url}: download truncated at {done} of {size} bytes; try again")
    return h.hexdigest()


def resolve(source: str | Path, arch: str, *, base_url: str | None = None, progress: bool = True) -> Path:
    """``--pretrained`` -> a local file: an existing path as it is, a name downloaded (or found in the cache)."""
    path = Path(source)
    if path.is_file():
        return path
    if str(source) in PRETRAINED:
        return download(weights_for(str(source), arch), base_url=base_url, progress=progress)
    if path.suffix or os.sep in str(source):
        raise FileNotFoundError(f"pretrained weights {path}: no such file")
    raise PretrainedError(f"--pretrained {source!r}: not a file and not a known name; names: {', '.join(PRETRAINED)}")


def load_weights(model: nn.Module, source: str | Path, arch: str, *, base_url: str | None = None,
                 progress: bool = True, strict_backbone: bool = True) -> list[str]:
    """Fill ``model`` (built for ``arch``) from ``--pretrained source``: a name or a path.

    2D weights given to a 3D ResNet (``r3d_18``) are inflated (I3D); RGB weights given to a flow model
    get cross-modality initialisation of the first convolution, 2D (2L channels) or 3D (2 channels), and
    a classifier of another size keeps its initialisation (see :func:`twostream.models.load_pretrained`).

    Returns:
        The names of the model's entries that were not loaded.
    """
    path = resolve(source, arch, base_url=base_url, progress=progress)
    state = read_state_dict(path)
    conv1 = state.get("conv1.weight")
    if isinstance(model, VideoResNet) and conv1 is not None and conv1.ndim == 4:
        if "stem.3.weight" in model.state_dict():
            raise PretrainedError(f"{path}: 2D weights inflate into r3d_18 only; r2plus1d_18's factorised "
                                  "convolutions have no 2D counterpart (use --pretrained kinetics400)")
        state = inflate_state_dict(state, model)
    return load_state(model, state, path, strict_backbone=strict_backbone)
