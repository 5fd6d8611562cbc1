"""The only module that talks to llama-cpp-python.

It owns one model and one context and exposes what the LYNX loop needs and nothing more:
tokenising, chat-template rendering, single- and multi-token decodes at the end of a KV
cache it keeps in step with a token list, rollback (``truncate``), a sampler chain in the
HF/vLLM order, and feature capture at a cue (final normalised state through
``llama_get_embeddings_ith`` with embeddings on for that one decode, intermediate residual
layers through an eval callback installed once and armed only for that decode).

The low-level API is used instead of ``Llama.generate`` because a cue rollback must drop
tokens from the KV cache and the ``Llama`` wrapper cannot take an eval callback.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp._logger
import llama_cpp.llama_cpp as L
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from lynx_edge.errors import ContextOverflowError, ModelError
from lynx_edge.model_files import cache_dir

_GGUF_MAGIC = b"GGUF"
_N_BATCH = 512

llama_cpp._logger.set_verbose(bool(os.environ.get("LYNX_EDGE_VERBOSE")))
L.llama_backend_init()

_LIB_DIR = Path(llama_cpp.__file__).parent / "lib"
_SHLIB = ".dylib" if sys.platform == "darwin" else ".so"
_ggml = ctypes.CDLL(str(_LIB_DIR / f"libggml-base{_SHLIB}"))
_ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
_ggml.ggml_get_name.restype = ctypes.c_char_p
_ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
_ggml.ggml_nbytes.restype = ctypes.c_size_t
_ggml.ggml_backend_tensor_get.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
]
_ggml.ggml_backend_tensor_get.restype = None

log = logging.getLogger(__name__)
_MAX_LAYERS = 16  # as in csrc/capture_cb.c


class _CaptureState(ctypes.Structure):
    """Shared with csrc/capture_cb.c: armed flag, wanted tensor names, output rows."""

    _fields_ = [
        ("armed", ctypes.c_int),
        ("n_names", ctypes.c_int),
        ("n_embd", ctypes.c_int),
        ("captured", ctypes.c_int),
        ("names", (ctypes.c_char * 32) * _MAX_LAYERS),
        ("out", ctypes.POINTER(ctypes.c_float) * _MAX_LAYERS),
    ]


def _compiled_callback() -> int | None:
    """Address of the C eval callback, compiled once into the cache (a dormant Python
    callback costs ~0.2 ms per decode: llama.cpp asks it about every graph node).
    None where no C compiler works; the Python callback is used then."""
    src = Path(__file__).parent / "csrc" / "capture_cb.c"
    digest = hashlib.sha256(src.read_bytes() + str(_LIB_DIR).encode()).hexdigest()[:12]
    target = cache_dir().parent / "native" / f"capture_cb-{digest}{_SHLIB}"
    try:
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
            shared = "-dynamiclib" if sys.platform == "darwin" else "-shared"
            subprocess.run(
                [cc, "-O2", shared, "-fPIC", str(src), "-o", str(tmp), f"-L{_LIB_DIR}", "-lggml-base", f"-Wl,-rpath,{_LIB_DIR}"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, target)
        lib = ctypes.CDLL(str(target))
        return ctypes.cast(lib.lynx_capture_cb, ctypes.c_void_p).value
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        log.debug("C capture callback unavailable (%s); using the Python one", exc)
        return None


def default_threads() -> int:
    """All cores on small machines (2 threads are 15 % faster than 1 on 2 cores), half on
    larger ones where the second half are usually SMT siblings."""
    n = os.cpu_count() or 1
    return n if n <= 4 else n // 2


@dataclass(frozen=True)
class ModelInfo:
    """What a probe card is checked against, and what the UI shows about a model."""

    path: str
    name: str
    architecture: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_ctx_train: int
    tokenizer_fingerprint: str


@dataclass(frozen=True)
class SamplingSettings:
    """One request's sampler: top_k → temperature → top_p → dist(seed); greedy at T = 0."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 100
    seed: int = 0


class Sampler:
    """A llama.cpp sampler chain; ``clone`` gives an independent copy with the same RNG state."""

    def __init__(self, chain: ctypes.c_void_p) -> None:
        self._chain = chain

    @classmethod
    def build(cls, s: SamplingSettings) -> Sampler:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if s.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(s.temperature))
            if s.top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(s.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return cls(chain)

    def clone(self) -> Sampler:
        return Sampler(L.llama_sampler_clone(self._chain))

    def close(self) -> None:
        if self._chain:
            L.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:
        self.close()


class LlamaBackend:
    """One GGUF model with one context whose KV cache always holds exactly ``self.tokens``."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        capture_layers: Sequence[int] = (),
        capture_final: bool = True,
        gpu_layers: int = 999,
    ) -> None:
        """Load ``path``; ``capture_layers`` are 1-based block outputs (HF ``hidden_states``
        indexing) that ``decode(..., capture=True)`` returns, followed by the final
        normalised state when ``capture_final``. ``n_ctx`` is capped at the trained context."""
        path = Path(path)
        _check_gguf_file(path)
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        self._model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelError(
                f"llama.cpp could not load {path} (corrupt or unsupported GGUF): "
                "re-download the file or pick another with --model PATH"
            )
        self._vocab = L.llama_model_get_vocab(self._model)
        self.info = self._read_info(path)
        for layer in capture_layers:
            if not 1 <= layer < self.info.n_layer:
                raise ModelError(
                    f"feature layer {layer} does not exist in {self.info.name} "
                    f"({self.info.n_layer} blocks; use 1..{self.info.n_layer - 1} or the final norm)"
                )
        self.n_threads = n_threads or default_threads()
        self._capture_final = capture_final
        n_ctx = min(n_ctx, self.info.n_ctx_train) if self.info.n_ctx_train > 0 else n_ctx
        self._layers = sorted(capture_layers)
        if len(self._layers) > _MAX_LAYERS:
            raise ModelError(f"a probe can read at most {_MAX_LAYERS} intermediate layers")
        self._rows = [np.zeros(self.info.n_embd, np.float32) for _ in self._layers]
        self._cap = _CaptureState(armed=0, n_names=len(self._layers), n_embd=self.info.n_embd)
        for i, layer in enumerate(self._layers):
            self._cap.names[i].value = f"l_out-{layer - 1}".encode()
            self._cap.out[i] = self._rows[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        address = _compiled_callback() if self._layers else None
        self.native_callback = address is not None
        self._callback = L.ggml_backend_sched_eval_callback(address or self._on_eval)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = _N_BATCH
        cparams.n_ubatch = _N_BATCH
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        # UNSPECIFIED resolves to the GGUF's own pooling, NONE for causal LMs (per-token states).
        cparams.pooling_type = L.LLAMA_POOLING_TYPE_UNSPECIFIED
        cparams.embeddings = False
        cparams.no_perf = True
        cparams.swa_full = True  # rollbacks of more than a token are safe on SWA models
        if self._layers:
            cparams.cb_eval = self._callback
            cparams.cb_eval_user_data = ctypes.cast(ctypes.pointer(self._cap), ctypes.c_void_p)
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            L.llama_model_free(self._model)
            self._model = None
            raise ModelError(
                f"could not create a {n_ctx}-token context for {path.name}: "
                "lower --n-ctx or free memory"
            )
        self.n_ctx = min(n_ctx, L.llama_n_ctx(self._ctx))  # llama.cpp pads; keep the asked size
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(_N_BATCH, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.tokens: list[int] = []
        self.bos = L.llama_vocab_bos(self._vocab)
        self.eos = L.llama_vocab_eos(self._vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.chat_template = self.meta("tokenizer.chat_template")

    # ---- metadata -------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None when the key is absent."""
        size = L.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buf = ctypes.create_string_buffer(size + 1)
        L.llama_model_meta_val_str(self._model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", errors="replace")

    def _read_info(self, path: Path) -> ModelInfo:
        n_vocab = L.llama_vocab_n_tokens(self._vocab)
        digest = hashlib.sha256()
        for i in range(n_vocab):
            digest.update(L.llama_vocab_get_text(self._vocab, i) or b"")
            digest.update(b"\0")
        return ModelInfo(
            path=str(path),
            name=self.meta("general.name") or path.stem,
            architecture=self.meta("general.architecture") or "unknown",
            n_embd=L.llama_model_n_embd(self._model),
            n_layer=L.llama_model_n_layer(self._model),
            n_vocab=n_vocab,
            n_ctx_train=L.llama_model_n_ctx_train(self._model),
            tokenizer_fingerprint=digest.hexdigest()[:16],
        )

    # ---- text -----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Tokenise with special tokens parsed (so ``</think>`` is one token where it exists)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, True)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, True)
        return list(buf[:n])

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a rendered chat prompt: templates write BOS themselves, so add it only
        when the model wants one and the text did not bring it (never a double BOS)."""
        toks = self.tokenize(text)
        if self.add_bos and self.bos >= 0 and (not toks or toks[0] != self.bos):
            toks.insert(0, self.bos)
        return toks

    def piece(self, token: int) -> bytes:
        """The raw bytes of one token, special tokens spelled out."""
        n = L.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self._vocab, token))

    def render_chat(
        self, messages: Sequence[dict], template: str | None = None, **kwargs: object
    ) -> str:
        """Render with the GGUF's Jinja template (or ``template``) as llama-cpp-python does."""
        tmpl = template or self.chat_template
        if not tmpl:
            raise ModelError(
                f"{self.info.name} has no chat template: use a preset that brings one "
                "or a GGUF with tokenizer.chat_template"
            )
        formatter = Jinja2ChatFormatter(
            template=tmpl,
            eos_token=self.token_text(self.eos) if self.eos >= 0 else "",
            bos_token=self.token_text(self.bos) if self.bos >= 0 else "",
        )
        return formatter(messages=list(messages), **kwargs).prompt

    # ---- KV cache -------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        """Drop every KV entry from position ``n`` on (a cue rollback, a new turn's divergence)."""
        if n >= len(self.tokens):
            return
        if not L.llama_memory_seq_rm(self._mem, 0, n, -1):
            raise ModelError(
                f"{self.info.architecture} models cannot roll back their cache; "
                "LYNX exits need a transformer (attention) model"
            )
        del self.tokens[n:]

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        """Keep the longest cached prefix of ``tokens`` (at least one token is left to decode,
        so fresh logits exist) and return how many tokens were reused."""
        n = min(self.common_prefix(tokens), len(tokens) - 1)
        self.truncate(n)
        return n

    def common_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the cache already holds."""
        n = 0
        limit = min(len(self.tokens), len(tokens))
        while n < limit and self.tokens[n] == tokens[n]:
            n += 1
        return n

    def check_room(self, n_new: int) -> None:
        if self.n_past + n_new > self.n_ctx:
            raise ContextOverflowError(self.n_past + n_new, self.n_ctx)

    def decode(self, tokens: Sequence[int], *, capture: bool = False) -> np.ndarray | None:
        """Append ``tokens`` to the KV cache; logits are computed for the last one only.

        With ``capture`` (a single cue token) the features are returned: the requested
        intermediate layers then the final normalised state, as one float32 vector.
        """
        self.check_room(len(tokens))
        if capture:
            if len(tokens) != 1:
                raise ValueError("features are captured on single-token decodes only")
            self._cap.captured = 0
            self._cap.armed = int(bool(self._layers))
            if self._capture_final:
                L.llama_set_embeddings(self._ctx, True)
            try:
                self._decode_chunk(tokens)
                parts = [row.copy() for row in self._rows]
                if self._capture_final:
                    final = L.llama_get_embeddings_ith(self._ctx, -1)
                    parts.append(np.ctypeslib.as_array(final, shape=(self.info.n_embd,)).copy())
            finally:
                if self._capture_final:
                    L.llama_set_embeddings(self._ctx, False)
                self._cap.armed = 0
            if self._cap.captured != (1 << len(self._layers)) - 1:
                raise ModelError(
                    f"{self.info.architecture} does not name its layer outputs l_out-*: "
                    "intermediate-layer probes cannot run on it; use a final-norm-only probe"
                )
            return np.concatenate(parts).astype(np.float32, copy=False)
        for start in range(0, len(tokens), _N_BATCH):
            self._decode_chunk(tokens[start : start + _N_BATCH])
        return None

    def _decode_chunk(self, chunk: Sequence[int]) -> None:
        b = self._batch
        pos0 = len(self.tokens)
        b.n_tokens = len(chunk)
        for i, tok in enumerate(chunk):
            b.token[i] = tok
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 0
        b.logits[len(chunk) - 1] = 1
        rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            if rc == 1:
                raise ContextOverflowError(pos0 + len(chunk), self.n_ctx)
            raise ModelError(f"llama_decode failed with code {rc}")
        self.tokens.extend(chunk)

    def _on_eval(self, tensor: int, ask: bool, _user: int) -> bool:
        """Python twin of csrc/capture_cb.c, for machines without a C compiler."""
        cap = self._cap
        if not cap.armed:
            return False
        name = _ggml.ggml_get_name(tensor)
        for i in range(cap.n_names):
            if cap.names[i].value == name:
                if not ask:
                    row = 4 * cap.n_embd
                    _ggml.ggml_backend_tensor_get(tensor, cap.out[i], _ggml.ggml_nbytes(tensor) - row, row)
                    cap.captured |= 1 << i
                return True
        return False

    def logits(self) -> np.ndarray:
        """Logits of the last decoded token (a view valid until the next decode)."""
        ptr = L.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.info.n_vocab,))

    def sample(self, sampler: Sampler) -> int:
        return L.llama_sampler_sample(sampler._chain, self._ctx, -1)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()


def _check_gguf_file(path: Path) -> None:
    """Fail fast, in one line, on a missing file or one that is not a GGUF at all."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path} (pass --model PATH to a .gguf file or a preset name)")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF file (bad magic {magic!r}): re-download it or convert it with llama.cpp"
        )
