"""What to explain: one named token, or every token of an answer (teacher forcing, docs/design.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TokenTarget", "AnswerTarget", "TokenPlan", "as_target", "resolve_token",
           "plan_tokens"]


@dataclass(frozen=True)
class TokenTarget:
    """One token, explained as the next token after the prompt (paper default).

    token: a string (its last sub-token is explained, as in the paper) or a token id.
    query: the detector concept; None means the explainer's template with the token ("a photo of a bird").
    """

    token: str | int
    query: str | None = None


@dataclass(frozen=True)
class AnswerTarget:
    """Every token of an answer, each explained with the text before it appended to the prompt.

    answer: the answer text to teacher-force; None generates it greedily (``max_new_tokens`` at most).
    query: one detector concept for every token; None means the template with each token.
    """

    answer: str | None = None
    max_new_tokens: int = 32
    query: str | None = None


@dataclass(frozen=True)
class TokenPlan:
    """For one image: the sequence the LM reads and the tokens explained in it.

    input_ids: prompt ids (padding removed) followed by the teacher-forced text.
    positions: per explained token, the index in ``input_ids`` whose logit predicts it.
    token_ids, tokens, queries: per explained token.
    """

    input_ids: list[int]
    positions: list[int]
    token_ids: list[int]
    tokens: list[str]
    queries: list[str]


def as_target(target, query: str | None = None) -> TokenTarget | AnswerTarget:
    """What every explainer accepts as ``target`` (a token string or id, a TokenTarget, an AnswerTarget) and an
    optional ``query``, as one target object; a query given twice is refused."""
    if isinstance(target, AnswerTarget):
        if query is not None:
            raise ValueError("pass the query inside the AnswerTarget")
        return target
    if isinstance(target, TokenTarget):
        if query is not None and target.query is not None:
            raise ValueError(f"two queries given: {target.query!r} in the target and {query!r}; pass one")
        return TokenTarget(target.token, query or target.query)
    return TokenTarget(target, query)


def resolve_token(tokenizer, token: str | int) -> tuple[int, str]:
    """A token string (→ its last sub-token, paper default) or id → (id, string). Unknown tokens are refused."""
    if isinstance(token, int):
        if not 0 <= token < len(tokenizer):
            raise ValueError(f"token id {token} is outside the MLLM's vocabulary (0..{len(tokenizer) - 1})")
        return token, _decode(tokenizer, token)
    ids = tokenizer(token.strip(), add_special_tokens=False)["input_ids"] if token.strip() else []
    unknown = tokenizer.unk_token_id
    if not ids or (unknown is not None and unknown in ids):
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        raise ValueError(f"token {token!r} is not in the MLLM's vocabulary (it tokenises to {pieces}); expected "
                         "a word the tokenizer knows")
    return ids[-1], token.strip()


def _decode(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id]).strip()
    return text or tokenizer.convert_ids_to_tokens(token_id)


def plan_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, embedding: torch.Tensor,
                target, template: str) -> list[TokenPlan]:
    """One ``TokenPlan`` per image for a ``TokenTarget`` or an ``AnswerTarget``."""
    tokenizer = model.processor.mllm_tokenizer
    prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
    if isinstance(target, TokenTarget):
        token_id, token = resolve_token(tokenizer, target.token)
        query = target.query or template.format(token)
        return [TokenPlan(ids, [len(ids) - 1], [token_id], [token], [query]) for ids in prompts]
    if not isinstance(target, AnswerTarget):
        raise TypeError(f"expected a TokenTarget, an AnswerTarget or a token string; received {type(target).__name__}")
    if target.answer is not None:
        answers = [tokenizer(target.answer, add_special_tokens=False)["input_ids"]] * len(prompts)
    else:
        with torch.no_grad():
            answers = model.generate(embedding, {"input_ids": input_ids, "attention_mask": attention_mask},
                                     max_new_tokens=target.max_new_tokens).token_ids
    plans = []
    for ids, answer in zip(prompts, answers):
        tokens = [_decode(tokenizer, t) for t in answer]
        queries = [target.query or template.format(token) for token in tokens]
        plans.append(TokenPlan(ids + answer[:-1], [len(ids) - 1 + t for t in range(len(answer))], list(answer),
                               tokens, queries))
    return plans
