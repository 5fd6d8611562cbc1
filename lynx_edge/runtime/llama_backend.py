"""The only module that talks to llama-cpp-python.

It owns one model and one context and exposes what the LYNX loop needs and nothing more:
tokenising, chat-template rendering, batched decodes of several sequences in one KV cache
(each sequence's tokens are mirrored in Python, so the cache always holds exactly
``seqs[seq]``), rollback and branching of sequences, sampler chains (HF/vLLM order, penalties
and logit bias; a grammar checked after sampling), log-probabilities, and feature capture at
cues (final normalised state through ``llama_get_embeddings_ith`` with embeddings on for that
one decode; intermediate residual layers through an eval callback installed once and armed
only for that decode).

The low-level API is used instead of ``Llama.generate`` because a cue rollback must drop
tokens from the KV cache, trials and forced exits branch a sequence, and the ``Llama``
wrapper can take neither an eval callback nor several sequences.

The KV cache is unified (one buffer for all sequences): a branch then shares its prefix's
cells (``llama_memory_seq_cp`` copies metadata only), which is what makes a trial answer or a
forced exit cost its own tokens and nothing more.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as L
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from lynx_edge.errors import ContextOverflowError, ModelError, SettingError
from lynx_edge.events import TokenLogprob
from lynx_edge.runtime.model_info import ModelInfo, weights_fingerprint
from lynx_edge.runtime.options import FunctionTool
from lynx_edge.runtime.threads import ThreadGovernor
from lynx_edge.runtime.tool_calls import ToolFormat

_GGUF_MAGIC = b"GGUF"
N_BATCH = 512  # tokens per llama_decode call (one ubatch: a capture sees the whole batch)
# The KV cache holds Q8_0 with flash attention on. Measured here: half the memory of F16 and
# 25 % faster single-sequence decodes on 2 cores; and llama.cpp's CPU attention then takes one
# code path whatever the batch holds (F16 switches to a tiled kernel at 64 rows and to a split-KV
# kernel for single rows past 512 cells, whose rounding differs), so a request's tokens do not
# depend on how many others share its batch.
KV_TYPE = 8  # GGML_TYPE_Q8_0
KV_FALLBACK_TYPE = 1  # GGML_TYPE_F16

_VERBOSE = bool(os.environ.get("LYNX_EDGE_VERBOSE"))
_LOG_ERROR, _LOG_CONT = 3, 5


@L.llama_log_callback
def _log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    """llama.cpp's log: errors only (``LYNX_EDGE_VERBOSE=1`` shows everything). Its complaint
    that a unified cache for several sequences is larger than the trained context is dropped:
    each sequence still stays within ``n_ctx``."""
    global _last_level
    if level != _LOG_CONT:
        _last_level = level
    message = text.decode("utf-8", errors="replace")
    if _VERBOSE or (_last_level == _LOG_ERROR and "possible training context overflow" not in message):
        sys.stderr.write(message)


_last_level = 0
L.llama_log_set(_log, ctypes.c_void_p(0))

# A Ctrl-C that lands while llama.cpp is inside the log callback raises KeyboardInterrupt in the
# callback, where ctypes can only report it as "unraisable" and carry on: loading would finish
# as if the key was never pressed. The hook keeps it, and `_raise_pending_interrupt` re-raises it
# once the C call returns (model load, context creation, every decode).
_interrupt_pending = False
_unraisable_hook = sys.unraisablehook


def _keep_interrupt(unraisable) -> None:  # noqa: ANN001 - sys.UnraisableHookArgs
    global _interrupt_pending
    if unraisable.exc_type is KeyboardInterrupt:
        _interrupt_pending = True
    else:
        _unraisable_hook(unraisable)


def _raise_pending_interrupt() -> None:
    global _interrupt_pending
    if _interrupt_pending:
        _interrupt_pending = False
        raise KeyboardInterrupt


sys.unraisablehook = _keep_interrupt
L.llama_backend_init()

_LIB_DIR = Path(llama_cpp.__file__).parent / "lib"
_SHLIB = ".dylib" if sys.platform == "darwin" else ".so"
_ggml = ctypes.CDLL(str(_LIB_DIR / f"libggml-base{_SHLIB}"))
_ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
_ggml.ggml_get_name.restype = ctypes.c_char_p
_ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
_ggml.ggml_nbytes.restype = ctypes.c_size_t
_ggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
_ggml.ggml_backend_tensor_get.restype = None

log = logging.getLogger(__name__)
_MAX_LAYERS = 16  # as in csrc/capture_cb.c

# llama.cpp's AMX matmul (weights repacked into an "AMX" buffer on Sapphire Rapids and newer
# Xeons when the wheel was built there with -march=native) segfaults on the first decode on
# some machines (ggml-org/llama.cpp#20824, closed unfixed); measured here on a 2-core Xeon VM.
# Extra buffer types are all-or-nothing, so where AMX is compiled in they are turned off:
# plain CPU buffers, which decode at the same speed for models this size.
_AMX_BUILD = b"AMX_INT8 = 1" in (L.llama_print_system_info() or b"")


def model_params(gpu_layers: int = 999) -> L.llama_model_params:
    """Model parameters lynx-edge loads every GGUF with (shared with the plain-llama.cpp
    reference in benchmarks and tests, so both load the weights the same way)."""
    params = L.llama_model_default_params()
    params.n_gpu_layers = gpu_layers
    params.use_extra_bufts = not _AMX_BUILD
    return params


def template_and_token(path: str | Path, text: str) -> tuple[str | None, bool]:
    """A GGUF's chat template, and whether ``text`` is one token of its vocabulary, read with
    the vocabulary alone (no weights: milliseconds, whatever the file's size)."""
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelError(f"llama.cpp could not read {path} (corrupt or unsupported GGUF)")
    try:
        template = L.llama_model_chat_template(model, None)
        raw = text.encode()
        buf = (L.llama_token * (len(raw) + 8))()
        n = L.llama_tokenize(L.llama_model_get_vocab(model), raw, len(raw), buf, len(raw) + 8, False, True)
        return (template.decode("utf-8", errors="replace") if template else None), n == 1
    finally:
        L.llama_model_free(model)


def plain_llama(path: str | Path, **kwargs: object) -> llama_cpp.Llama:
    """llama-cpp-python's own ``Llama`` on ``path``, loaded with ``model_params`` and the same
    KV cache (Q8_0, flash attention): the reference benchmarks and tests compare against."""
    default = L.llama_model_default_params
    ours = model_params()
    L.llama_model_default_params = lambda: ours  # Llama takes no extra-buffer switch
    try:
        return llama_cpp.Llama(str(path), verbose=False, type_k=KV_TYPE, type_v=KV_TYPE, flash_attn=True, **kwargs)
    finally:
        L.llama_model_default_params = default


LOOSE_CHAR = 'char ::= [^"\\\\] |'
STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _strict_strings(gbnf: str) -> str:
    """JSON strings without raw control characters, as JSON requires and llama.cpp's own C++
    converter writes them (the Python port lets a string run on over new lines, which a
    small model does until the token limit)."""
    return gbnf.replace(LOOSE_CHAR, STRICT_CHAR)


def json_grammar(schema: dict | None = None) -> str:
    """GBNF for a JSON answer: any object (``schema`` None) or one that validates against
    ``schema``, made by llama.cpp's own converter (as llama-cpp-python ships it)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return _strict_strings(json_schema_to_gbnf(json.dumps({"type": "object"} if schema is None else schema)))
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise SettingError(f"the JSON schema cannot become a grammar ({exc}): simplify it or check its $refs") from None


def tool_call_grammar(tools: Sequence[FunctionTool], fmt: ToolFormat, *, most: int = 1) -> str:
    """GBNF for an answer that is a call (up to ``most`` of them) to one of ``tools``, framed as
    ``fmt`` writes calls; each tool's arguments follow its JSON schema through llama.cpp's own
    converter, so only the framing and the choice between tools are written here."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    calls = []
    try:
        for i, tool in enumerate(tools):
            rule = converter.visit(converter.resolve_refs(tool.parameters, f"tool{i}"), f"tool{i}-arguments")
            before, after = (json.dumps(text, ensure_ascii=False) for text in fmt.framing(tool.name))
            calls.append(f"( {before} {rule} {after} )")
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise SettingError(
            f"tool {tool.name!r}: its parameters cannot become a grammar ({exc}): simplify the schema", field="tools"
        ) from None
    more = f' ( "\\n" tool-call ){{0,{most - 1}}}' if most > 1 else ""
    rules = _strict_strings(converter.format_grammar())
    return f"{rules}\ntool-call ::= {' | '.join(calls)}\nroot ::= [ \\t\\n]{{0,8}} tool-call{more}\n"


class _CaptureState(ctypes.Structure):
    """Shared with csrc/capture_cb.c: armed flag, wanted tensor names, output rows."""

    _fields_ = [
        ("armed", ctypes.c_int),
        ("n_names", ctypes.c_int),
        ("n_embd", ctypes.c_int),
        ("captured", ctypes.c_int),
        ("max_rows", ctypes.c_int),
        ("rows", ctypes.c_int * _MAX_LAYERS),
        ("names", (ctypes.c_char * 32) * _MAX_LAYERS),
        ("out", ctypes.POINTER(ctypes.c_float) * _MAX_LAYERS),
    ]


def _compiled_callback() -> int | None:
    """Address of the C eval callback, compiled once into the cache (a dormant Python
    callback costs ~0.2 ms per decode: llama.cpp asks it about every graph node).
    None where no C compiler works; the Python callback is used then."""
    from lynx_edge.runtime.model_files import native_dir

    src = Path(__file__).parent / "csrc" / "capture_cb.c"
    digest = hashlib.sha256(src.read_bytes() + str(_LIB_DIR).encode()).hexdigest()[:12]
    target = native_dir() / f"capture_cb-{digest}{_SHLIB}"
    try:
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
            shared = "-dynamiclib" if sys.platform == "darwin" else "-shared"
            subprocess.run(
                [
                    cc,
                    "-O2",
                    shared,
                    "-fPIC",
                    str(src),
                    "-o",
                    str(tmp),
                    f"-L{_LIB_DIR}",
                    "-lggml-base",
                    f"-Wl,-rpath,{_LIB_DIR}",
                ],
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


def gpu_offload() -> bool:
    """llama.cpp was built with a GPU backend (CUDA, Metal, …) it can offload layers to."""
    return bool(L.llama_supports_gpu_offload())


@dataclass(frozen=True)
class SamplingSettings:
    """One request's sampler: logit bias → penalties → top_k → temperature → top_p → dist(seed);
    greedy at T = 0. Penalties follow OpenAI: a token's logit drops by ``frequency_penalty``
    per earlier occurrence in the completion and by ``presence_penalty`` once it occurred;
    ``repeat_penalty`` (llama.cpp's and Ollama's) divides a repeated token's positive logit."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 100
    seed: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_window: int = 4096  # completion tokens the penalties look back on
    logit_bias: tuple[tuple[int, float], ...] = ()
    repeat_penalty: float = 1.0

    @property
    def greedy(self) -> SamplingSettings:
        """The same settings at temperature 0 (forced answers)."""
        return dataclasses.replace(self, temperature=0.0)


class Sampler:
    """A llama.cpp sampler chain; ``clone`` gives an independent copy with the same state."""

    def __init__(self, chain: ctypes.c_void_p) -> None:
        self._chain = chain

    @classmethod
    def build(cls, s: SamplingSettings, n_vocab: int) -> Sampler:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if s.logit_bias:
            biases = (L.llama_logit_bias * len(s.logit_bias))(*[L.llama_logit_bias(t, b) for t, b in s.logit_bias])
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(n_vocab, len(s.logit_bias), biases))
        if s.frequency_penalty or s.presence_penalty or s.repeat_penalty != 1.0:
            L.llama_sampler_chain_add(
                chain,
                L.llama_sampler_init_penalties(
                    n_vocab, s.penalty_window, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
                ),
            )
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


class Grammar:
    """A GBNF grammar that constrains sampled tokens (llama.cpp's grammar sampler)."""

    def __init__(self, sampler: ctypes.c_void_p) -> None:
        self._sampler = sampler

    def close(self) -> None:
        if self._sampler:
            L.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class BatchItem:
    """Tokens to append to one sequence in a batched decode."""

    seq: int
    tokens: Sequence[int]
    logits: bool = True  # compute the logits of the last token
    capture: bool = False  # a single cue token whose features are wanted


@dataclass(frozen=True)
class BatchOut:
    """Where an item's results are: ``row`` names its last token for ``sample``/``logits``."""

    row: int | None
    features: np.ndarray | None = None


class LlamaBackend:
    """One GGUF model with one context whose KV cache holds exactly ``seqs[s]`` for each
    sequence ``s`` (sequence 0 is the one single-request callers use)."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_seq: int = 2,
        kv_cells: int | None = None,
        n_threads: int | None = None,
        capture_layers: Sequence[int] = (),
        capture_final: bool = True,
        gpu_layers: int = 999,
    ) -> None:
        """Load ``path``. ``n_ctx`` is the most tokens one sequence may hold (capped at the
        trained context); ``n_seq`` sequences share ``kv_cells`` cache cells (default: one
        sequence's worth). ``capture_layers`` are 1-based block outputs (HF ``hidden_states``
        indexing) returned by capturing decodes, followed by the final normalised state when
        ``capture_final``."""
        path = Path(path)
        _check_gguf_file(path)
        self._model = L.llama_model_load_from_file(str(path).encode(), model_params(gpu_layers))
        if self._model and _interrupt_pending:
            L.llama_model_free(self._model)
            self._model = None
            _raise_pending_interrupt()
        if not self._model:
            raise ModelError(
                f"llama.cpp could not load {path} (corrupt or unsupported GGUF): "
                "re-download the file or pick another with --model PATH"
            )
        self._vocab = L.llama_model_get_vocab(self._model)
        self.info = self._read_info(path)
        self.threads = ThreadGovernor(n_threads)
        self._arm_capture(capture_layers, capture_final)
        n_ctx = min(n_ctx, self.info.n_ctx_train) if self.info.n_ctx_train > 0 else n_ctx
        cells = max(kv_cells or n_ctx, n_ctx)
        try:
            self._ctx = self._make_context(cells, n_seq)
        except KeyboardInterrupt:
            L.llama_model_free(self._model)
            self._model = None
            raise
        if not self._ctx:
            L.llama_model_free(self._model)
            self._model = None
            raise ModelError(
                f"could not create a {cells}-token context for {path.name}: "
                "lower --n-ctx (or --parallel) or free memory"
            )
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.kv_cells = cells
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(N_BATCH, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.seqs: list[list[int]] = [[] for _ in range(n_seq)]
        self.bos = L.llama_vocab_bos(self._vocab)
        self.eos = L.llama_vocab_eos(self._vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.chat_template = self.meta("tokenizer.chat_template")
        self._candidates = np.zeros(self.info.n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._candidates["id"] = np.arange(self.info.n_vocab, dtype=np.int32)

    def _arm_capture(self, layers: Sequence[int], final: bool) -> None:
        """Buffers and the eval callback that copy the wanted layer outputs (dormant until a
        capturing decode arms them)."""
        for layer in layers:
            if not 1 <= layer < self.info.n_layer:
                raise ModelError(
                    f"feature layer {layer} does not exist in {self.info.name} "
                    f"({self.info.n_layer} blocks; use 1..{self.info.n_layer - 1} or the final norm)"
                )
        self._layers = sorted(layers)
        if len(self._layers) > _MAX_LAYERS:
            raise ModelError(f"a probe can read at most {_MAX_LAYERS} intermediate layers")
        self._capture_final = final
        self._rows = [np.zeros((N_BATCH, self.info.n_embd), np.float32) for _ in self._layers]
        self._cap = _CaptureState(armed=0, n_names=len(self._layers), n_embd=self.info.n_embd, max_rows=N_BATCH)
        for i, layer in enumerate(self._layers):
            self._cap.names[i].value = f"l_out-{layer - 1}".encode()
            self._cap.out[i] = self._rows[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        address = _compiled_callback() if self._layers else None
        self.native_callback = address is not None
        self._callback = L.ggml_backend_sched_eval_callback(address or self._on_eval)

    def _make_context(self, cells: int, n_seq: int) -> ctypes.c_void_p | None:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = cells
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = n_seq
        cparams.kv_unified = True  # branches share their prefix's cells; several sequences batch
        cparams.type_k = cparams.type_v = KV_TYPE
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        cparams.n_threads = cparams.n_threads_batch = self.threads.current
        # UNSPECIFIED resolves to the GGUF's own pooling, NONE for causal LMs (per-token states).
        cparams.pooling_type = L.LLAMA_POOLING_TYPE_UNSPECIFIED
        cparams.embeddings = False
        cparams.no_perf = True
        cparams.swa_full = True  # rollbacks of more than a token are safe on SWA models
        if self._layers:
            cparams.cb_eval = self._callback
            cparams.cb_eval_user_data = ctypes.cast(ctypes.pointer(self._cap), ctypes.c_void_p)
        ctx = L.llama_init_from_model(self._model, cparams)
        if not ctx:  # heads narrower than a Q8_0 block (32): an F16 cache fits them
            cparams.type_k = cparams.type_v = KV_FALLBACK_TYPE
            ctx = L.llama_init_from_model(self._model, cparams)
        if ctx and _interrupt_pending:
            L.llama_free(ctx)
            _raise_pending_interrupt()
        return ctx

    @property
    def n_threads(self) -> int:
        return self.threads.current

    def follow_load(self) -> None:
        """Decode with as many threads as the machine's other load leaves free."""
        before = self.threads.current
        if self.threads.advise() != before:
            L.llama_set_n_threads(self._ctx, self.threads.current, self.threads.current)

    # ---- metadata -------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None when the key is absent."""
        size = L.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buf = ctypes.create_string_buffer(size + 1)
        L.llama_model_meta_val_str(self._model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", errors="replace")

    def parameter_size(self) -> str:
        """The weights' parameter count as model hubs write it ("135M", "7.6B")."""
        n = L.llama_model_n_params(self._model)
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"

    def quantization(self) -> str:
        """The weights' type as llama.cpp names it ("Q8_0", "Q4_K - Medium")."""
        buf = ctypes.create_string_buffer(128)
        L.llama_model_desc(self._model, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace").split(" ", 2)[-1]

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
            weights_fingerprint=weights_fingerprint(path),
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

    def render_chat(self, messages: Sequence[dict], template: str | None = None, **kwargs: object) -> str:
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
    def tokens(self) -> list[int]:
        """What sequence 0 holds (the single-request sequence)."""
        return self.seqs[0]

    def truncate(self, n: int, seq: int = 0) -> None:
        """Drop every KV entry of ``seq`` from position ``n`` on (a cue rollback, a new
        turn's divergence)."""
        if n >= len(self.seqs[seq]):
            return
        if not L.llama_memory_seq_rm(self._mem, seq, n, -1):
            raise ModelError(
                f"{self.info.architecture} models cannot roll back their cache; "
                "LYNX exits need a transformer (attention) model"
            )
        del self.seqs[seq][n:]

    def branch(self, src: int, dst: int, n: int) -> None:
        """Make ``dst`` hold the first ``n`` tokens of ``src`` (sharing their cells: no copy
        of the cache, no decode)."""
        self.clear(dst)
        L.llama_memory_seq_cp(self._mem, src, dst, 0, n)
        self.seqs[dst] = self.seqs[src][:n]

    def clear(self, seq: int) -> None:
        """Forget everything ``seq`` holds."""
        if self.seqs[seq]:
            L.llama_memory_seq_rm(self._mem, seq, 0, -1)
            self.seqs[seq] = []

    def positions(self, seq: int) -> tuple[int, int]:
        """(lowest, highest) position the cache holds for ``seq`` (-1, -1 when empty)."""
        return L.llama_memory_seq_pos_min(self._mem, seq), L.llama_memory_seq_pos_max(self._mem, seq)

    def reuse_prefix(self, tokens: Sequence[int], seq: int = 0) -> int:
        """Keep the longest cached prefix of ``tokens`` in ``seq`` (at least one token is left
        to decode, so fresh logits exist) and return how many tokens were reused."""
        n = min(self.common_prefix(tokens, seq), len(tokens) - 1)
        self.truncate(n, seq)
        return n

    def common_prefix(self, tokens: Sequence[int], seq: int = 0) -> int:
        """How many leading ``tokens`` sequence ``seq`` already holds."""
        held = self.seqs[seq]
        n = 0
        limit = min(len(held), len(tokens))
        while n < limit and held[n] == tokens[n]:
            n += 1
        return n

    def fits(self, n_new: int, seq: int = 0) -> bool:
        """Whether ``seq`` has room for ``n_new`` more tokens."""
        return len(self.seqs[seq]) + n_new <= self.n_ctx

    def check_room(self, n_new: int, seq: int = 0) -> None:
        if not self.fits(n_new, seq):
            raise ContextOverflowError(len(self.seqs[seq]) + n_new, self.n_ctx)

    def decode(self, tokens: Sequence[int], *, seq: int = 0, capture: bool = False) -> np.ndarray | None:
        """Append ``tokens`` to one sequence; logits are computed for the last one only.

        With ``capture`` (a single cue token) its features are returned: the requested
        intermediate layers then the final normalised state, as one float32 vector.
        """
        if capture:
            if len(tokens) != 1:
                raise ValueError("features are captured on single-token decodes only")
            return self.decode_batch([BatchItem(seq, tokens, capture=True)])[0].features
        self.check_room(len(tokens), seq)
        for start in range(0, len(tokens), N_BATCH):
            chunk = tokens[start : start + N_BATCH]
            self.decode_batch([BatchItem(seq, chunk, logits=start + N_BATCH >= len(tokens))])
        return None

    def decode_batch(self, items: Sequence[BatchItem]) -> list[BatchOut]:
        """Decode several sequences' new tokens in one llama_decode (at most N_BATCH tokens).

        Capturing items must be single tokens; with any of them, embeddings are on for this
        decode, which makes every row an output, so callers keep long chunks out of it.
        """
        total = sum(len(item.tokens) for item in items)
        if total > N_BATCH:
            raise ValueError(f"a batch holds at most {N_BATCH} tokens, got {total}")
        for item in items:
            self.check_room(len(item.tokens), item.seq)
        capture = any(item.capture for item in items)
        b = self._batch
        row = 0
        rows: list[int | None] = []
        for item in items:
            pos0 = len(self.seqs[item.seq])
            for i, tok in enumerate(item.tokens):
                b.token[row] = tok
                b.pos[row] = pos0 + i
                b.n_seq_id[row] = 1
                b.seq_id[row][0] = item.seq
                b.logits[row] = 0
                row += 1
            if item.logits and item.tokens:
                b.logits[row - 1] = 1
                rows.append(row - 1)
            else:
                rows.append(None)
        b.n_tokens = row
        if capture:
            self._cap.captured = 0
            self._cap.armed = int(bool(self._layers))
            if self._capture_final:
                L.llama_set_embeddings(self._ctx, True)
        try:
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                if rc == 1:
                    raise ContextOverflowError(sum(len(s) for s in self.seqs) + total, self.kv_cells)
                raise ModelError(f"llama_decode failed with code {rc}")
            for item in items:
                self.seqs[item.seq].extend(item.tokens)
            outs = [BatchOut(r, self._features(r) if item.capture else None) for item, r in zip(items, rows)]
        finally:
            if capture:
                if self._capture_final:
                    L.llama_set_embeddings(self._ctx, False)
                self._cap.armed = 0
        _raise_pending_interrupt()  # one that landed in a callback during this decode (its tokens are kept)
        return outs

    def _features(self, row: int | None) -> np.ndarray:
        if self._layers and self._cap.captured != (1 << len(self._layers)) - 1:
            raise ModelError(
                f"{self.info.architecture} does not name its layer outputs l_out-*: "
                "intermediate-layer probes cannot run on it; use a final-norm-only probe"
            )
        parts = [rows[row].copy() for rows in self._rows]
        if self._capture_final:
            final = L.llama_get_embeddings_ith(self._ctx, row)
            parts.append(np.ctypeslib.as_array(final, shape=(self.info.n_embd,)).copy())
        return np.concatenate(parts).astype(np.float32, copy=False)

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
                    size = min(_ggml.ggml_nbytes(tensor), row * cap.max_rows)
                    _ggml.ggml_backend_tensor_get(tensor, cap.out[i], 0, size)
                    cap.rows[i] = size // row
                    cap.captured |= 1 << i
                return True
        return False

    # ---- sampling -------------------------------------------------------------------
    def logits(self, row: int = -1) -> np.ndarray:
        """Logits of an output row of the last decode (a view valid until the next decode)."""
        ptr = L.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.info.n_vocab,))

    def sampler(self, settings: SamplingSettings) -> Sampler:
        return Sampler.build(settings, self.info.n_vocab)

    def sample(self, sampler: Sampler, row: int = -1, grammar: Grammar | None = None) -> int:
        """Sample from an output row; with ``grammar`` only tokens it allows (the token
        sampled freely is checked first and kept when allowed, as llama.cpp's own server
        does: the full-vocabulary grammar pass runs only when it is not)."""
        if grammar is None:
            return L.llama_sampler_sample(sampler._chain, self._ctx, row)
        logits = self.logits(row)
        token = self._apply(sampler._chain, logits)
        if not self._allows(grammar, token, logits[token]):
            token = self._apply(sampler._chain, logits, grammar)
        L.llama_sampler_accept(sampler._chain, token)
        L.llama_sampler_accept(grammar._sampler, token)
        return token

    def _apply(self, chain: ctypes.c_void_p, logits: np.ndarray, grammar: Grammar | None = None) -> int:
        """The token ``chain`` selects from ``logits`` (after ``grammar`` masks them), without
        accepting it."""
        cand = self._candidates
        cand["logit"] = logits
        cand["p"] = 0.0
        arr = L.llama_token_data_array(cand.ctypes.data_as(L.llama_token_data_p), len(cand), -1, False)
        if grammar is not None:
            L.llama_sampler_apply(grammar._sampler, ctypes.byref(arr))
        L.llama_sampler_apply(chain, ctypes.byref(arr))
        chosen = ctypes.cast(arr.data, ctypes.POINTER(L.llama_token_data))[arr.selected]
        return int(chosen.id)

    @staticmethod
    def _allows(grammar: Grammar, token: int, logit: float) -> bool:
        one = (L.llama_token_data * 1)(L.llama_token_data(token, float(logit), 0.0))
        arr = L.llama_token_data_array(one, 1, -1, False)
        L.llama_sampler_apply(grammar._sampler, ctypes.byref(arr))
        return bool(np.isfinite(one[0].logit))

    def accept(self, grammar: Grammar, token: int) -> None:
        """Advance ``grammar`` past ``token`` (replaying text it already allowed)."""
        L.llama_sampler_accept(grammar._sampler, token)

    def grammar(self, gbnf: str, root: str = "root") -> Grammar | None:
        """A grammar sampler for ``gbnf``; None when llama.cpp cannot parse it."""
        sampler = L.llama_sampler_init_grammar(self._vocab, gbnf.encode(), root.encode())
        return Grammar(sampler) if sampler else None

    def logprob(self, row: int, token: int, top: int = 0) -> TokenLogprob:
        """log-softmax of an output row's raw logits (what llama-cpp-python reports), at
        ``token``, with the texts of the ``top`` most likely tokens."""
        logits = self.logits(row).astype(np.float64)
        peak = logits.max()
        lse = peak + np.log(np.exp(logits - peak).sum())
        best: tuple[tuple[str, float], ...] = ()
        if top:
            idx = np.argpartition(-logits, top - 1)[:top]
            idx = idx[np.argsort(-logits[idx], kind="stable")]
            best = tuple((self.token_text(int(i)), float(logits[i] - lse)) for i in idx)
        piece = self.piece(token)
        return TokenLogprob(piece.decode("utf-8", errors="replace"), tuple(piece), float(logits[token] - lse), best)

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
