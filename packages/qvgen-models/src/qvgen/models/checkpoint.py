"""Reading and writing local diffusers folders: component checks, per-component loading, atomic save."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import AutoTokenizer

from qvgen.core import atomic_dir

COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "transformer": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer_config.json", "tokenizer.json", "spiece.model"),
    "scheduler": ("scheduler_config.json",),
}
"""Per component subfolder: files of which at least one must exist."""


def refuse_image_to_video(
    config: Mapping[str, Any], where: object, *, family: str, supported: str, markers: Mapping[str, str]
) -> None:
    """Raise, naming the field and `where`, if a transformer config is image-to-video: a field of `markers` is
    set (its value says what it marks), or in_channels != out_channels (image latents concatenated)."""
    for field, marks in markers.items():
        if config.get(field) is not None:
            raise ValueError(
                f"{where}: {field}={config[field]} marks {marks}; qvgen.models supports {supported}"
            )
    if config.get("in_channels") != config.get("out_channels"):
        raise ValueError(
            f"{where}: in_channels={config.get('in_channels')} != out_channels={config.get('out_channels')} "
            f"marks image-to-video {family} (image latents concatenated); qvgen.models supports {supported}"
        )


def check_folder(path: str | Path, components: tuple[str, ...] = tuple(COMPONENT_FILES)) -> Path:
    """Resolve `path` and fail, naming the component and file, if any component is missing."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"model checkpoint {root} is not a directory; pass a local diffusers folder "
            "(hub ids are not downloaded)"
        )
    for name in components:
        wanted = COMPONENT_FILES[name]
        if not any((root / name / f).is_file() for f in wanted):
            raise FileNotFoundError(
                f"model checkpoint {root} is missing component {name!r}: expected "
                f"{' or '.join(str(root / name / f) for f in wanted)}"
            )
    return root


def load_model(cls: Any, root: Path, component: str, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained(root, subfolder=component)``; errors name the component and folder."""
    try:
        model = cls.from_pretrained(root, subfolder=component, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise OSError(
            f"cannot load component {component!r} ({cls.__name__}) from {root / component}: {e}"
        ) from e
    return model.eval()


def load_tokenizer(root: Path) -> Any:
    """The tokenizer in ``root/tokenizer``."""
    try:
        return AutoTokenizer.from_pretrained(root, subfolder="tokenizer")
    except (OSError, ValueError) as e:
        raise OSError(f"cannot load component 'tokenizer' from {root / 'tokenizer'}: {e}") from e


def load_scheduler(root: Path) -> Any:
    """The scheduler in ``root/scheduler``, of the class its config names."""
    config_path = root / "scheduler" / "scheduler_config.json"
    try:
        class_name = json.loads(config_path.read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as e:
        raise OSError(f"cannot read the scheduler class from {config_path}: {e}") from e
    cls = getattr(diffusers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{config_path} names {class_name!r}, which is not a diffusers scheduler class")
    return cls.from_pretrained(root, subfolder="scheduler")


def transformer_root(path: str | Path) -> tuple[Path, str | None]:
    """(folder, subfolder) of a transformer given a pipeline folder or the transformer folder itself."""
    root = Path(path).expanduser()
    if (root / "transformer" / "config.json").is_file():
        return root, "transformer"
    if (root / "config.json").is_file():
        return root, None
    raise FileNotFoundError(
        f"no transformer at {root}: expected {root / 'transformer' / 'config.json'} (a diffusers "
        f"pipeline folder) or {root / 'config.json'} (a transformer folder)"
    )


def save_pipeline_atomic(pipeline: Any, out_dir: str | Path) -> Path:
    """``pipeline.save_pretrained`` into a temp folder beside `out_dir`, then swap it in by rename."""
    return atomic_dir(Path(out_dir).expanduser().resolve(), pipeline.save_pretrained)
