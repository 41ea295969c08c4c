"""Reading a free-text answer as yes/no exactly as POPE's reference evaluation does (RUCAIBox/POPE evaluate.py).

The reference keeps the text before the first ".", removes every ",", splits on single spaces (not on any
whitespace) and answers "no" when one of the words is exactly "No", "not" or "no"; anything else is "yes".
So "NO" is a yes, "Yes, there is no dog" is a no and the empty answer is a yes. Those quirks are the
benchmark's definition: every published POPE number was computed with them, so they are kept, not fixed.
"""

from __future__ import annotations

__all__ = ["parse_answer", "p_yes", "yes_no_token_ids", "NEGATIVE_WORDS", "YES_WORDS", "NO_WORDS"]

NEGATIVE_WORDS = ("No", "not", "no")


def parse_answer(text: str) -> str:
    """"yes" or "no", as POPE's reference evaluation reads ``text``."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if any(word in words for word in NEGATIVE_WORDS) else "yes"


# The answer's first token, as the MLLM would write it; case variants pooled (LLaVA answers "Yes"/"No").
YES_WORDS, NO_WORDS = ("yes", "Yes"), ("no", "No")


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """First-token ids of "yes"/"Yes" and "no"/"No" (unknown and ambiguous ids dropped)."""
    def first_ids(words: tuple[str, ...]) -> set[int]:
        ids = {tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words}
        return ids - {tokenizer.unk_token_id}

    yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
    yes, no = sorted(yes - no), sorted(no - yes)
    if not yes or not no:
        raise ValueError(f"the MLLM's tokenizer has no distinct first token for yes ({YES_WORDS}) and no "
                         f"({NO_WORDS}); received ids yes={yes}, no={no}")
    return yes, no


def p_yes(next_token_logits, yes_ids: list[int], no_ids: list[int]):
    """(B, V) logits at the answer's first position → (B,) P(yes), the softmax restricted to the yes/no ids.

    P(yes) = Σ_yes p / (Σ_yes p + Σ_no p) = sigmoid(logsumexp(z_yes) − logsumexp(z_no)), in float32.
    """
    logits = next_token_logits.float()
    return (logits[:, yes_ids].logsumexp(-1) - logits[:, no_ids].logsumexp(-1)).sigmoid()
