"""The bias benchmark spec: a YAML file naming image folders per group, C−/C+, traits, prompt and perturbation.

Every field is checked on load, and an error names the file, the field, what was expected and what was
received (``SpecError``), so that a typo fails before an hour of model time rather than after it. See
``examples/bias/*.yaml`` for annotated specs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from owlens.bias.fgsm import FGSM
from owlens.bias.perturbation import PAPER_TARGET, Concept
from owlens.bias.pgd import PGD
from owlens.bias.scoring import PAPER_PROMPT
from owlens.bias.stats import DEFAULT_STATISTICS
from owlens.queries import QUERY_TEMPLATE, check_query_template
from owlens.results import FieldsResult

__all__ = ["IMAGE_SUFFIXES", "BenchmarkSpec", "GroupSpec", "PerturbationSpec", "SpecError", "load_spec",
           "parse_spec"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TOP_KEYS = {"name", "images", "groups", "traits", "prompt_template", "owl_template", "perturbation",
             "random_seed", "statistics", "max_new_tokens", "batch_size"}


class SpecError(ValueError):
    """A benchmark spec that cannot be run, with the field at fault."""


@dataclass(frozen=True)
class PerturbationSpec(FieldsResult):
    """method "fgsm" (paper default: ε = 1, L∞) or "pgd" (epsilon = budget, steps, step_size, norm).

    region: None moves all of E against every box (paper); a fraction r in (0, 1] moves only the patch tokens
    of the boxes where OWL sees C− with presence ≥ r × the image's best (``region.py``).
    layer: None perturbs E itself (paper); an OWL encoder layer k perturbs the state entering layer k, which
    reaches E through OWL's own layers (``perturbation.applied_at``); the region then picks the loss's boxes only.
    """

    method: str = "fgsm"
    epsilon: float = 1.0
    norm: str = "linf"
    steps: int = 1
    step_size: float | None = None
    target: float = PAPER_TARGET
    region: float | None = None
    layer: int | None = None

    def __post_init__(self):
        if self.method not in ("fgsm", "pgd"):
            raise SpecError(f"perturbation.method: expected 'fgsm' or 'pgd'; received {self.method!r}")
        if self.method == "fgsm" and (self.norm != "linf" or self.steps != 1 or self.step_size is not None):
            raise SpecError("perturbation: FGSM is one L∞ step of size epsilon; norm/steps/step_size are for "
                            f"method 'pgd' (received norm={self.norm!r}, steps={self.steps}, "
                            f"step_size={self.step_size})")
        if self.norm not in ("linf", "l2"):
            raise SpecError(f"perturbation.norm: expected 'linf' or 'l2'; received {self.norm!r}")
        if not self.epsilon > 0 or self.steps < 1 or not self.target > 0:
            raise SpecError(f"perturbation: expected epsilon > 0, steps >= 1, target > 0; received "
                            f"epsilon={self.epsilon}, steps={self.steps}, target={self.target}")
        if self.region is not None and not 0 < self.region <= 1:
            raise SpecError(f"perturbation.region: expected a fraction in (0, 1] or null (all of E, the paper); "
                            f"received {self.region}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)
                                       or self.layer < 0):
            raise SpecError(f"perturbation.layer: expected an OWL encoder layer (0 or more) or null (E itself, "
                            f"the paper); received {self.layer!r}")

    def build(self, model, owl_template: str = QUERY_TEMPLATE):
        """The perturber this spec describes, over ``model``."""
        if self.method == "fgsm":
            return FGSM(model, self.epsilon, target=self.target, owl_template=owl_template, region=self.region,
                        layer=self.layer)
        return PGD(model, self.epsilon, self.steps, step_size=self.step_size, norm=self.norm, target=self.target,
                   owl_template=owl_template, region=self.region, layer=self.layer)


@dataclass(frozen=True)
class GroupSpec:
    """One image folder, perturbed from C− (what its images show) to C+.

    c_null: optional, a semantic null concept C0: one the traits should not depend on (for C− "man" → C+ "woman"
    and a trait about a profession, e.g. "a person wearing glasses"). The same attack and budget swap C− → C0, and
    the bias is also read net of that swap: the control that moves E the way the attack does, where random moves
    of the same size cannot (docs/benchmarks.md, "Bias assessment").
    """

    name: str
    folder: Path
    c_minus: Concept
    c_plus: Concept
    c_null: Concept | None = None

    def images(self) -> list[Path]:
        """The folder's image files (by suffix, sorted, not recursive)."""
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    def to_dict(self) -> dict:
        # c_null only when named: a run folder of a spec without one keeps the spec copy it was claimed with
        return {"name": self.name, "folder": str(self.folder), "c_minus": self.c_minus.to_dict(),
                "c_plus": self.c_plus.to_dict(), **({"c_null": self.c_null.to_dict()} if self.c_null else {})}


@dataclass(frozen=True)
class BenchmarkSpec:
    """A validated spec; ``statistics`` holds resamples, permutations and seed for ``stats.paired_delta``."""

    name: str
    groups: tuple[GroupSpec, ...]
    traits: tuple[str, ...]
    prompt_template: str = PAPER_PROMPT
    owl_template: str = QUERY_TEMPLATE
    perturbation: PerturbationSpec = field(default_factory=PerturbationSpec)
    random_seed: int = 0
    statistics: dict = field(default_factory=lambda: dict(DEFAULT_STATISTICS))
    max_new_tokens: int = 8
    batch_size: int = 8

    def to_dict(self) -> dict:
        out = asdict(self)
        out["groups"] = [g.to_dict() for g in self.groups]
        out["traits"] = list(self.traits)
        return out


def _fail(where: str, expected: str, received) -> SpecError:
    return SpecError(f"{where}: expected {expected}; received {received!r}")


def _concept(value, where: str, template: str) -> Concept:
    if isinstance(value, str) and value.strip():
        return Concept.of(value, template)
    if isinstance(value, dict) and set(value) == {"name", "queries"} and isinstance(value["queries"], list) \
            and value["queries"] and all(isinstance(q, str) and q.strip() for q in value["queries"]):
        return Concept(str(value["name"]), tuple(value["queries"]))
    raise _fail(where, "a concept name or {name: ..., queries: [non-empty strings]}", value)


def _group(value, index: int, root: Path, template: str, source: str) -> GroupSpec:
    where = f"{source}: groups[{index}]"
    required = {"name", "folder", "c_minus", "c_plus"}
    if not isinstance(value, dict) or not required <= set(value) <= required | {"c_null"}:
        raise _fail(where, "a mapping with name, folder, c_minus, c_plus and optionally c_null", value)
    # Resolved now: the spec copy and the fingerprint name the same folder whatever directory a resume runs in.
    folder = (root / str(value["folder"])).expanduser().resolve()
    if not folder.is_dir():
        raise SpecError(f"{where}.folder: expected an existing folder of images; received {value['folder']!r} "
                        f"(resolved to {folder}); put the group's images there or fix the path")
    group = GroupSpec(str(value["name"]), folder, _concept(value["c_minus"], f"{where}.c_minus", template),
                      _concept(value["c_plus"], f"{where}.c_plus", template),
                      _concept(value["c_null"], f"{where}.c_null", template) if "c_null" in value else None)
    if group.c_null is not None and group.c_null.name in (group.c_minus.name, group.c_plus.name):
        raise _fail(f"{where}.c_null", f"a concept other than c_minus ({group.c_minus.name!r}) and c_plus "
                    f"({group.c_plus.name!r}): a swap to either is not a null", group.c_null.name)
    if not group.images():
        raise SpecError(f"{where}.folder: {folder} holds no images (expected files ending {IMAGE_SUFFIXES})")
    return group


def _integer(data: dict, key: str, default: int, minimum: int, source: str) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(f"{source}: {key}", f"an integer >= {minimum}", value)
    return value


def parse_spec(data, base_dir: str | Path = ".", source: str = "spec") -> BenchmarkSpec:
    """A mapping (the parsed YAML) → ``BenchmarkSpec``; relative folders resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise _fail(source, "a YAML mapping at the top level", type(data).__name__)
    if unknown := sorted(set(data) - _TOP_KEYS):
        raise SpecError(f"{source}: unknown keys {unknown}; expected some of {sorted(_TOP_KEYS)}")
    owl_template = data.get("owl_template", QUERY_TEMPLATE)
    if isinstance(owl_template, str):  # "{concept}", the placeholder of owlens 0.1's specs, still reads
        owl_template = owl_template.replace("{concept}", "{}")
    try:
        check_query_template(owl_template, f"{source}: owl_template")
    except ValueError as err:
        raise SpecError(str(err)) from None
    prompt = data.get("prompt_template", PAPER_PROMPT)
    if not isinstance(prompt, str) or "{X}" not in prompt:
        raise _fail(f"{source}: prompt_template", "a string holding the trait placeholder {X}", prompt)
    traits = data.get("traits")
    if not isinstance(traits, list) or not traits or not all(isinstance(t, str) and t.strip() for t in traits):
        raise _fail(f"{source}: traits", "a non-empty list of trait names", traits)
    groups = data.get("groups")
    if not isinstance(groups, list) or not groups:
        raise _fail(f"{source}: groups", "a non-empty list of groups", groups)
    root = Path(base_dir) / str(data.get("images", "."))
    parsed = tuple(_group(g, i, root, owl_template, source) for i, g in enumerate(groups))
    if len({g.name for g in parsed}) != len(parsed):
        raise _fail(f"{source}: groups", "distinct group names", [g.name for g in parsed])
    return BenchmarkSpec(
        name=str(data.get("name", Path(source).stem)), groups=parsed, traits=tuple(traits), prompt_template=prompt,
        owl_template=owl_template, perturbation=_perturbation(data.get("perturbation", {}), source),
        random_seed=_integer(data, "random_seed", 0, 0, source),
        statistics=_statistics(data.get("statistics", {}), source),
        max_new_tokens=_integer(data, "max_new_tokens", 8, 0, source),
        batch_size=_integer(data, "batch_size", 8, 1, source))


def _perturbation(value, source: str) -> PerturbationSpec:
    keys = {"method", "epsilon", "norm", "steps", "step_size", "target", "region", "layer"}
    if not isinstance(value, dict) or set(value) - keys:
        raise _fail(f"{source}: perturbation", f"a mapping with some of {sorted(keys)}", value)
    try:
        return PerturbationSpec(**{k: (float(v) if k in ("epsilon", "target", "step_size", "region") and v is not None
                                       else v) for k, v in value.items()})
    except (TypeError, ValueError) as err:
        raise SpecError(f"{source}: {err}") from err


def _statistics(value, source: str) -> dict:
    defaults = DEFAULT_STATISTICS
    if not isinstance(value, dict) or set(value) - set(defaults):
        raise _fail(f"{source}: statistics", f"a mapping with some of {sorted(defaults)}", value)
    merged = {**defaults, **value}
    for key, number in merged.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < (0 if key == "seed" else 1):
            raise _fail(f"{source}: statistics.{key}", "a positive integer (seed: >= 0)", number)
    return merged


def load_spec(path: str | Path) -> BenchmarkSpec:
    """Read and validate a YAML spec; folders resolve against the spec file's own folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bias spec {str(path)!r} not found: expected a YAML file (see examples/bias/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({err})") from err
    return parse_spec(data, path.parent, str(path))
