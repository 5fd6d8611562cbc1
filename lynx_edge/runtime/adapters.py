"""Merge a preset's shipped LoRA adapter into its base GGUF, once per machine.

Why merge instead of applying the adapter at load time (llama.cpp can): measured on the
embedded reasoner, the merged GGUF decodes faster (see ``probes/smollm2-135m-reasoner``),
and a merged file is one model with one fingerprint that probe cards can name.

The merge is deterministic: base weights are dequantised, ``B·A`` is added in float64 and
the sum re-quantised, all element-wise IEEE arithmetic, so every machine writes the same
bytes. Inputs and output are checked against the preset's pinned SHA-256; the file is written
to a temporary name and renamed, so an interrupted merge never leaves a partial model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lynx_edge.errors import ModelError
from lynx_edge.runtime.presets import Adapter

_CHUNK = 1 << 20
_FILE_TYPES = {
    "Q4_0": 2,
    "Q4_1": 3,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q8_0": 7,
}  # llama_ftype of a GGUF whose block weights are mostly this type


def adapter_path(adapter: Adapter) -> Path:
    """The adapter file shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "models" / adapter.file


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def merged_path(adapter: Adapter, cache: Path) -> Path:
    return cache / "merged" / f"{adapter.merged_name.replace(' ', '-')}.{adapter.merged_sha256[:12]}.gguf"


def merged_model(adapter: Adapter, base: Path, cache: Path) -> Path:
    """The merged GGUF in ``cache``, made now if it is not there yet."""
    target = merged_path(adapter, cache)
    if target.is_file():
        return target
    for what, path, want in (
        ("base model", base, adapter.base_sha256),
        ("adapter", adapter_path(adapter), adapter.sha256),
    ):
        if not path.is_file():
            raise ModelError(f"the {what} {path} is missing: reinstall lynx-edge")
        if sha256_of(path) != want:
            raise ModelError(
                f"the {what} {path} is not the file this preset was made for (checksum differs): reinstall it"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        write_merged(base, adapter_path(adapter), tmp, name=adapter.merged_name, qtype=adapter.merged_type)
        got = sha256_of(tmp)
        if got != adapter.merged_sha256:
            raise ModelError(
                f"merging {adapter.file} gave a model with checksum {got[:12]}…, not {adapter.merged_sha256[:12]}…: "
                "check that gguf and numpy are installed as lynx-edge asks"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_merged(base: Path, adapter: Path, out: Path, *, name: str, qtype: str) -> None:
    """Write ``base`` + every ``lora_b @ lora_a`` of ``adapter`` to ``out``: merged block
    weights in ``qtype``, every other tensor and all metadata (tokenizer, template) copied."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize, quantize

    def array(tensor) -> np.ndarray:  # noqa: ANN001 - a gguf ReaderTensor
        shape = [int(x) for x in reversed(tensor.shape.tolist())]
        return np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float64).reshape(shape)

    factors = {t.name: array(t) for t in GGUFReader(adapter).tensors}
    scale = 1.0
    reader = GGUFReader(base)
    alpha_field = GGUFReader(adapter).fields.get("adapter.lora.alpha")
    rank = next((f.shape[0] for n, f in factors.items() if n.endswith(".lora_a")), None)
    if alpha_field is not None and rank:
        scale = float(alpha_field.contents()) / rank
    target = GGMLQuantizationType[qtype]
    writer = GGUFWriter(str(out), arch=str(reader.fields["general.architecture"].contents()))
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.name", "general.file_type"):
            continue
        kind = fld.types[0]
        if kind == GGUFValueType.ARRAY:
            writer.add_key_value(key, fld.contents(), kind, sub_type=fld.types[-1])
        else:
            writer.add_key_value(key, fld.contents(), kind)
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", _FILE_TYPES[qtype])
    for tensor in reader.tensors:
        a, b = factors.get(f"{tensor.name}.lora_a"), factors.get(f"{tensor.name}.lora_b")
        if a is None or b is None:
            data = np.array(tensor.data)
            writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=tensor.tensor_type)
            continue
        merged = (array(tensor) + scale * (b @ a)).astype(np.float32)
        data = quantize(merged, target)
        writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
