"""Metrics of saliency maps against ground truth and against the model, one per file, and the benchmark.

Also the toy world's other validations, one layer above both the methods and the toy world (docs/design.md §8):
toy POPE files and the model's calibration on them (``toy_pope``), the hallucination flag against the injected
hallucinations (``hallucination_validation``) and the bias measure against the injected bias (``bias_validation``).

Each metric states its direction (``higher_is_better``), its ``category`` and its ``reference`` (Quantus-style).
"""

from owlens.evaluation.cue import CuePointing
from owlens.evaluation.insertion_deletion import DeletionInsertion, DeletionInsertionResult
from owlens.evaluation.mass_accuracy import MassAccuracy
from owlens.evaluation.maxboxacc import MaxBoxAcc, MaxBoxAccV2
from owlens.evaluation.pointing_game import PointingGame
from owlens.evaluation.rank_accuracy import RankAccuracy

__all__ = ["CuePointing", "DeletionInsertion", "DeletionInsertionResult", "MassAccuracy", "MaxBoxAcc", "MaxBoxAccV2",
           "PointingGame", "RankAccuracy"]
