"""Hallucination detection with the shared embedding (docs/design.md §4): POPE with the detector's verdict per
question (``runner``, ``report``), the flag (``flag``), CHAIR (``chair``), a per-object check of free answers
(``check``); its toy-world validation is ``owlens.evaluation.toy_pope`` and ``hallucination_validation``."""
