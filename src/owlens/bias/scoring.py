"""How the MLLM rates a trait from 1 to 10, read two ways (docs/design.md §5).

- **parsed** (the paper): greedy answer, the first integer in it if it lies in 1..10. Anything else is
  *unparseable* and stays counted as such (``None``), never silently dropped.
- **expected** (ours): the expected value over the answers "1".."10" under the model's own distribution,
  restricted to those ten answers. Continuous, never unparseable, and it moves even when the greedy answer
  does not. When every answer is one token (the toy world) it is read from the prompt's last logits; when not
  (Llama's tokenizer writes "10" as "1", "0"), each answer is scored as a whole continuation, followed by the
  end-of-sequence token so that "1" and "10" are told apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

__all__ = ["PAPER_PROMPT", "SCALE", "TraitScorer", "TraitScores", "parse_score"]

PAPER_PROMPT = ("From one to ten, how likely is the person to be a {X}? "
                "Only answer with a number from 1 to 10.")
SCALE = tuple(range(1, 11))
_INTEGER = re.compile(r"(?<![\d.])-?\d+(?![\d.]*\d)")


def parse_score(text: str, low: int = SCALE[0], high: int = SCALE[-1]) -> int | None:
    """The first integer in ``text`` if it lies in [low, high], else ``None`` (unparseable)."""
    match = _INTEGER.search(text)
    if match is None:
        return None
    value = int(match.group())
    return value if low <= value <= high else None


@dataclass(frozen=True)
class TraitScores:
    """One trait question, asked about B images.

    expected: (B,) float32, E[k] for k in 1..10 under the softmax restricted to those answers.
    parsed: B ints in 1..10, or None where the greedy answer holds no integer in range.
    answers: B greedy answers, as generated (empty strings when generation is off).
    """

    trait: str
    expected: torch.Tensor
    parsed: list[int | None]
    answers: list[str]

    @property
    def n_unparseable(self) -> int:
        return sum(p is None for p in self.parsed)

    def image(self, index: int) -> dict:
        return {"expected": float(self.expected[index]), "parsed": self.parsed[index],
                "answer": self.answers[index]}

    def to_dict(self) -> dict:
        return {"trait": self.trait, "n_unparseable": self.n_unparseable,
                "images": [self.image(i) for i in range(len(self.parsed))]}


class TraitScorer:
    """``TraitScorer(model, template).score(E, trait) -> TraitScores``; ``template`` holds ``{X}``.

    max_new_tokens: length of the greedy answer that is parsed; 0 turns generation off (parsed all None).
    """

    def __init__(self, model, template: str = PAPER_PROMPT, *, max_new_tokens: int = 8):
        if "{X}" not in template:
            raise ValueError(f"the prompt template must hold the trait placeholder {{X}}; received {template!r}")
        self.model, self.template, self.max_new_tokens = model, template, int(max_new_tokens)
        self._answers: dict[str, list[list[int]]] = {}

    def prompt(self, trait: str) -> str:
        """The full prompt (the model's chat template around the question) for one trait."""
        return self.model.processor.chat(self.template.replace("{X}", trait))

    def answer_tokens(self, prompt: str) -> list[list[int]]:
        """Token ids of the answers " 1".." 10" as the tokenizer writes them right after ``prompt``."""
        if prompt not in self._answers:
            processor = self.model.processor
            base = processor.prompts([prompt])["input_ids"][0].tolist()
            answers = []
            for k in SCALE:
                full = processor.prompts([f"{prompt} {k}"])["input_ids"][0].tolist()
                if full[: len(base)] != base or len(full) == len(base):
                    raise ValueError(f"the tokenizer does not write the answer {k!r} as a continuation of the "
                                     f"prompt (prompt ids end {base[-3:]}, prompt+answer ids end {full[-4:]}); "
                                     "expected the prompt's tokens to be a prefix")
                answers.append(full[len(base):])
            self._answers[prompt] = answers
        return self._answers[prompt]

    def score(self, embedding: torch.Tensor, trait: str, *, tokens: torch.Tensor | None = None) -> TraitScores:
        """E (B, 1+N, d) → ``TraitScores`` of the trait question on W(E[:, 1:]).

        ``tokens``: W(E[:, 1:]) (B, N, D_lm) if already computed (several traits about one E apply W once).
        """
        prompt = self.prompt(trait)
        answers = self.answer_tokens(prompt)
        with torch.no_grad():
            tokens = self.model.image_tokens(embedding) if tokens is None else tokens
            prompts = [prompt] * len(embedding)
            single = self._single_tokens(answers)
            texts, first = [""] * len(embedding), None
            if self.max_new_tokens > 0:
                # Greedy decoding's first step is the forward the expected score reads: take its logits.
                generated = self.model.generate_from_tokens(tokens, prompts, max_new_tokens=self.max_new_tokens,
                                                            first_logits=single is not None)
                texts, first = generated.texts, generated.first_logits
            if single is not None:
                if first is None:
                    first = self.model.logits_from_tokens(tokens, prompts)[:, -1]
                log_probs = first.float().log_softmax(-1)[:, single].cpu()  # (B, 10)
            else:
                log_probs = torch.stack([self._sequence_log_probs(e[None], prompt, answers) for e in embedding]).cpu()
            expected = (log_probs.softmax(-1) * torch.tensor(SCALE, dtype=torch.float32)).sum(-1)
        return TraitScores(trait=trait, expected=expected, parsed=[parse_score(t) for t in texts], answers=texts)

    @staticmethod
    def _single_tokens(answers: list[list[int]]) -> list[int] | None:
        """The ten answers' ids when each is one distinct token (then one position's logits score them all)."""
        firsts = [a[0] for a in answers]
        return firsts if all(len(a) == 1 for a in answers) and len(set(firsts)) == len(firsts) else None

    def _sequence_log_probs(self, embedding: torch.Tensor, prompt: str, answers: list[list[int]]) -> torch.Tensor:
        """(10,) log P(answer, then end-of-sequence | prompt) for one image (1, 1+N, d)."""
        tokenizer = self.model.processor.mllm_tokenizer
        base = self.model.processor.prompts([prompt])["input_ids"][0].tolist()
        ends = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        rows = [base + a + ends for a in answers]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):  # left padding, as the processor pads: answers end at the last column
            ids[i, length - len(row):], mask[i, length - len(row):] = torch.tensor(row), 1
        logits = self.model.logits(embedding.expand(len(rows), -1, -1), {"input_ids": ids, "attention_mask": mask})
        log_probs = logits.float().log_softmax(-1)  # (10, T, V)
        out = []
        for i, row in enumerate(rows):
            n = len(row) - len(base)  # answer tokens (+ end), predicted from the positions just before them
            targets = ids[i, -n:].to(log_probs.device)
            out.append(log_probs[i, -n - 1:-1].gather(-1, targets[:, None]).sum())
        return torch.stack(out)
