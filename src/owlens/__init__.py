"""owlens: explain multimodal LLMs through their vision perception.

The package follows the data flow of the joint model (docs/design.md §1):
image -> ``models`` (E, detector branch, language branch) -> ``explain`` / ``hallucination`` / ``bias``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
