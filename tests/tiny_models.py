"""Build tiny random-weight GGUF models for tests, on real tokenizers.

The model is a real ``qwen2`` network (attention, FFN, RoPE, KV cache all run) with small
random weights, plus a *script*: a bigram table written into the embedding and output
matrices with a large margin, so that greedy (and low-temperature) decoding follows a known
token sequence after a given token. That makes think handling, cues and exits deterministic
while every llama.cpp code path the runtime uses is exercised for real.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
R1_VOCAB = FIXTURES / "deepseek-r1-distill-qwen.vocab.gguf"
QWEN_VOCAB = FIXTURES / "qwen2.5-coder-instruct.vocab.gguf"  # a plain instruct model: it does not think


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level BPE alphabet: how raw bytes are spelled in the token list."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_CHARS = _bytes_to_unicode()


class Vocab:
    """Token strings of a vocabulary-only GGUF, with lookup by surface text."""

    def __init__(self, reader: GGUFReader) -> None:
        self.tokens: list[str] = [str(t) for t in reader.fields["tokenizer.ggml.tokens"].contents()]
        self._index = {t: i for i, t in enumerate(self.tokens)}

    def id(self, text: str) -> int:
        """Id of the single token whose surface text is ``text`` (special tokens verbatim)."""
        if text in self._index:
            return self._index[text]
        spelled = "".join(_BYTE_CHARS[b] for b in text.encode("utf-8"))
        return self._index[spelled]


def build_scripted_qwen2(
    path: Path,
    script: Sequence[str],
    *,
    vocab_gguf: Path = R1_VOCAB,
    n_embd: int = 64,
    n_layer: int = 2,
    seed: int = 0,
    chat_template: str | None = None,
) -> Path:
    """Write a tiny qwen2 GGUF whose greedy continuation after ``script[0]`` is ``script[1:]``.

    ``script`` is a list of single-token surface texts; every token but the last must be
    unique, because the script is a bigram table (each token names its successor).
    ``chat_template`` replaces the vocabulary's own template.
    """
    reader = GGUFReader(vocab_gguf)
    vocab = Vocab(reader)
    ids = [vocab.id(t) for t in script]
    sources = ids[:-1]
    if len(set(sources)) != len(sources):
        raise ValueError("script tokens (all but the last) must be unique")
    if len(sources) > n_embd:
        raise ValueError(f"script longer than n_embd={n_embd}")

    rng = np.random.default_rng(seed)
    n_vocab = len(vocab.tokens)
    n_head, n_head_kv, n_ff = 2, 1, 2 * n_embd  # 32-wide heads: the runtime's Q8_0 KV cache fits them
    head_dim = n_embd // n_head
    embd = rng.normal(0, 0.02, (n_vocab, n_embd)).astype(np.float32)
    out = rng.normal(0, 0.02, (n_vocab, n_embd)).astype(np.float32)
    for k, (src, dst) in enumerate(zip(ids[:-1], ids[1:])):
        embd[src] = 0.0
        embd[src, k] = 2.0
        out[dst, k] += 10.0

    w = GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-scripted-qwen2")
    w.add_block_count(n_layer)
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(1)  # mostly F16
    _copy_tokenizer(reader, w, chat_template)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.02, shape).astype(np.float32)

    w.add_tensor("token_embd.weight", embd.astype(np.float16))
    w.add_tensor("output.weight", out.astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "attn_q.weight", normal(n_embd, n_embd))
        w.add_tensor(p + "attn_q.bias", normal(n_embd))
        w.add_tensor(p + "attn_k.weight", normal(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_k.bias", normal(n_head_kv * head_dim))
        w.add_tensor(p + "attn_v.weight", normal(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_v.bias", normal(n_head_kv * head_dim))
        w.add_tensor(p + "attn_output.weight", normal(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ffn_gate.weight", normal(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", normal(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", normal(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _copy_tokenizer(reader: GGUFReader, w: GGUFWriter, chat_template: str | None = None) -> None:
    """Copy every ``tokenizer.*`` key of the vocabulary GGUF unchanged (but the template)."""
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template is not None:
            w.add_string(key, chat_template)
            continue
        types = field.types
        value = field.contents()
        if types[0] == GGUFValueType.ARRAY:
            w.add_array(key, value)
        elif types[0] == GGUFValueType.STRING:
            w.add_string(key, value)
        elif types[0] == GGUFValueType.BOOL:
            w.add_bool(key, value)
        elif types[0] == GGUFValueType.UINT32:
            w.add_uint32(key, value)
        else:
            raise TypeError(f"unexpected GGUF type {types} for {key}")
