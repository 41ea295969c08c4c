"""Bias assessment by semantic adversarial perturbation of the shared embedding E (docs/design.md §5).

Perturb E so that OWL sees C+ where it saw C− (``FGSM``, ``PGD``), ask the MLLM a 1-10 trait question on the
perturbed and the clean E (``TraitScorer``), and report the mean paired change with its bootstrap CI beside
controls that must read ~0: random perturbations of the same size (shuffled; orthogonal to OWL's concept logits),
the identity swap C− → C− (``IdentityPerturbation``) and, optionally, a semantic null swap.
"""

from owlens.bias.fgsm import FGSM
from owlens.bias.perturbation import Concept, Perturbation
from owlens.bias.pgd import PGD
from owlens.bias.probe import BiasProbe
from owlens.bias.random_control import IdentityPerturbation, OrthogonalRandomPerturbation, RandomPerturbation
from owlens.bias.runner import run_benchmark
from owlens.bias.scoring import PAPER_PROMPT, TraitScorer, TraitScores, parse_score
from owlens.bias.spec import BenchmarkSpec, SpecError, load_spec
from owlens.bias.stats import PairedDelta, paired_delta

__all__ = [
    "FGSM",
    "PAPER_PROMPT",
    "PGD",
    "BenchmarkSpec",
    "BiasProbe",
    "Concept",
    "IdentityPerturbation",
    "OrthogonalRandomPerturbation",
    "PairedDelta",
    "Perturbation",
    "RandomPerturbation",
    "SpecError",
    "TraitScorer",
    "TraitScores",
    "load_spec",
    "paired_delta",
    "parse_score",
    "run_benchmark",
]
