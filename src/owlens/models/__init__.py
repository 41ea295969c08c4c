"""The joint model J (docs/design.md §1): a real OWL detector and a real LLaVA joined by the alignment W."""

from owlens.models.alignment import Alignment, AlignmentConfig
from owlens.models.detection import Detections
from owlens.models.joint import JointModel
from owlens.models.language import Generation
from owlens.models.loading import CheckpointNotFoundError
from owlens.models.processor import GridMismatchError, JointProcessor

__all__ = ["Alignment", "AlignmentConfig", "CheckpointNotFoundError", "Detections", "Generation",
           "GridMismatchError", "JointModel", "JointProcessor"]
