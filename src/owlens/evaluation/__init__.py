"""Metrics of saliency maps against ground truth and against the model, one per file, and the benchmark.

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
