"""`choose()`: the source documents' decision framework (`rules.json`) evaluated for one situation.

    inputs ──rank()──▶ ordered methods + cited reasons + config "recipes"     (rules only)
           ──concretize──▶ configs for the model's architecture (rank ranges, α = 2r, targets)
           ──estimate──▶ trainable parameters, training memory, adapter size (`peftlab.estimate`)
           ──fit──▶ memory fallbacks (LoRA → QLoRA → r=8 → checkpointing), storage budget
           ──▶ Recommendation (ranked candidates, each with reasons and next steps)

Pure and deterministic: no clock, no randomness, no I/O beyond reading the packaged table and
the user's config.json, so equal inputs give equal recommendations. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from peftlab.choose.rules import Reason, load_rules, matches, recommended
from peftlab.core.registry import declaration
from peftlab.core.shapes import ModelShape
from peftlab.errors import ConfigError
from peftlab.estimate import Settings, estimate, model_shape

SCHEMA = "peftlab.choose/1"
GB = 1e9  # the source documents' GB (14 GB for 7e9 fp16 weights)
_TABLE = load_rules()
TASKS = tuple(_TABLE["tasks"])
GOALS = tuple(_TABLE["goals"])


@dataclass(frozen=True)
class ChooseInputs:
    """The situation to recommend for.

    task: one of TASKS. memory: accelerator memory in GB, "cpu" (no accelerator), or None
    (unknown: no fit check). model: a `peftlab estimate` preset or config.json path (None: no
    estimates, symbolic targets). examples: training examples (None: unknown). num_tasks: tasks
    to serve from one base. storage_mb: budget per task's adapter file. goal: a Quick Reference
    need (GOALS) or None. batch_size / seq_len / num_labels: the training run to estimate.
    """

    task: str
    latency_critical: bool = False
    memory: float | str | None = None
    model: str | None = "llama-2-7b"
    examples: int | None = None
    num_tasks: int = 1
    storage_mb: float | None = None
    combine_tasks: bool = False
    goal: str | None = None
    batch_size: int = 4
    seq_len: int = 512
    num_labels: int = 2

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown task type {self.task!r}; use one of: {', '.join(TASKS)}")
        if self.goal is not None and self.goal not in GOALS:
            raise ConfigError(f"unknown goal {self.goal!r}; use one of: {', '.join(GOALS)}")
        if isinstance(self.memory, str) and self.memory != "cpu":
            raise ConfigError(f"memory {self.memory!r} is not a number of GB or 'cpu'")
        if isinstance(self.memory, (int, float)) and not isinstance(self.memory, bool) and self.memory <= 0:
            raise ConfigError(f"memory={self.memory} GB is invalid; it must be > 0 (or 'cpu')")
        for key in ("num_tasks", "batch_size", "seq_len", "num_labels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} is invalid; it must be >= 1")
        if self.examples is not None and self.examples < 1:
            raise ConfigError(f"examples={self.examples} is invalid; it must be >= 1")
        if self.storage_mb is not None and self.storage_mb <= 0:
            raise ConfigError(f"storage_mb={self.storage_mb} is invalid; it must be > 0")

    @property
    def accelerator(self) -> str:
        return "cpu" if self.memory == "cpu" else "unknown" if self.memory is None else "gpu"

    def facts(self) -> dict:
        """What the rules' `when` conditions test."""
        return {"task": self.task, "latency_critical": self.latency_critical,
                "accelerator": self.accelerator, "examples": self.examples,
                "num_tasks": self.num_tasks, "storage_mb": self.storage_mb,
                "combine_tasks": self.combine_tasks, "goal": self.goal}


@dataclass(frozen=True)
class Ranking:
    """The rules' verdict before any model is involved: methods in order, with citations."""

    methods: tuple[str, ...]
    reasons: dict[str, tuple[Reason, ...]]
    demotions: dict[str, tuple[Reason, ...]]
    recipes: dict[str, dict]   # method -> choose-level settings (ranges, symbolic targets, merge)
    advice: tuple[Reason, ...]
    fired: tuple[str, ...]
    resolutions: dict[str, str]  # rule id -> its note on a seed disagreement, for fired rules


def rank(inputs: ChooseInputs, table: dict = _TABLE) -> Ranking:
    """Evaluate the rule groups in the table's order (see `rules.json` "about")."""
    facts = inputs.facts()
    order: list[str] = []
    reasons: dict[str, list[Reason]] = {}
    demoted: dict[str, list[Reason]] = {}
    sets: dict[str, dict] = {}
    advice, fired, resolutions = [], [], {}
    for group in table["order"]:
        facts["merge"] = bool(order) and sets.get(order[0], {}).get("merge", False)
        for rule in (r for r in table["rules"] if r["group"] == group["group"]):
            if not matches(rule["when"], facts):
                continue
            fired.append(rule["id"])
            if "note" in rule:
                resolutions[rule["id"]] = rule["note"]
            cited = Reason(rule["id"], rule["source"], rule["text"])
            if rule.get("advice"):
                advice.append(cited)
            for item in recommended(rule):
                method = item["method"]
                if method not in order:
                    order.append(method)
                reasons.setdefault(method, []).append(
                    Reason(rule["id"], item.get("source", rule["source"]), item.get("text", rule["text"])))
                for key, value in item.get("set", {}).items():
                    sets.setdefault(method, {}).setdefault(key, value)  # first rule to set wins
            because = rule.get("demote_because", {})
            for method in rule.get("demote", ()):
                demoted.setdefault(method, []).append(Reason(
                    rule["id"], because.get("source", rule["source"]), because.get("text", rule["text"])))
            if group["mode"] == "first":
                break
    ranked = [m for m in order if m not in demoted] + [m for m in order if m in demoted]
    recipes = {m: {**table["methods"][m]["config"], **sets.get(m, {})} for m in ranked}
    return Ranking(tuple(ranked), {m: tuple(reasons[m]) for m in ranked},
                   {m: tuple(demoted[m]) for m in ranked if m in demoted}, recipes,
                   tuple(advice), tuple(fired), resolutions)


def pick_ranges(recipe: dict, facts: dict, table: dict = _TABLE) -> dict:
    """A [low, high] range (e.g. source 003's "r=8-16") takes its end by the `ranges` rule."""
    high = matches(table["ranges"]["high_when"], facts)
    return {k: (v[1] if high else v[0]) if isinstance(v, list) else v for k, v in recipe.items()}


def concretize(recipe: dict, shape: ModelShape | None, table: dict = _TABLE) -> dict:
    """A method config from a ranged-out recipe: alpha = alpha_over_r · r, symbolic targets
    become the architecture's module names for their roles (kept symbolic without a model)."""
    config = {}
    for key, value in recipe.items():
        if key == "alpha_over_r":
            config["alpha"] = value * recipe["r"]
        elif key == "targets":
            roles = table["targets"][value]
            config["target_modules"] = value if shape is None else \
                roles if isinstance(roles, str) else list(shape.architecture.names(tuple(roles)))
        elif key not in ("merge", "nf4"):
            config[key] = value
    return config


@dataclass(frozen=True)
class Candidate:
    """One ranked recommendation: method, configuration, why, what it costs, what next."""

    rank: int
    method: str
    label: str
    config: dict
    config_source: str
    nf4: bool
    merge: bool
    gradient_checkpointing: bool
    inference: str
    reasons: tuple[Reason, ...]
    cautions: tuple[Reason, ...]
    trainable_params: int | None = None
    total_params: int | None = None
    training_memory_bytes: int | None = None
    adapter_bytes: int | None = None
    fits: bool | None = None
    next_steps: dict[str, tuple[Reason, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("reasons", "cautions"):
            out[key] = [r.to_dict() for r in getattr(self, key)]
        out["next_steps"] = {k: [r.to_dict() for r in v] for k, v in self.next_steps.items()}
        return out


@dataclass(frozen=True)
class Recommendation:
    inputs: ChooseInputs
    model: str | None
    candidates: tuple[Candidate, ...]
    advice: tuple[Reason, ...]
    fired: tuple[str, ...]
    resolutions: dict[str, str]

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "inputs": asdict(self.inputs), "model": self.model,
                "candidates": [c.to_dict() for c in self.candidates],
                "advice": [r.to_dict() for r in self.advice], "rules_fired": list(self.fired),
                "resolutions": dict(self.resolutions)}


def _estimate(method: str, config: dict, shape: ModelShape, inputs: ChooseInputs,
              checkpointing: bool):
    """`peftlab estimate` for this candidate's method config."""
    settings = Settings(batch_size=inputs.batch_size, seq_len=inputs.seq_len,
                        num_labels=inputs.num_labels if inputs.task == "classification" else None,
                        gradient_checkpointing=checkpointing)
    return estimate(shape, declaration(method).config_class.from_dict(config), settings)


def _fit(method: str, recipe: dict, shape: ModelShape, inputs: ChooseInputs, table: dict):
    """Walk the memory fallbacks until the estimate fits: (method, recipe, checkpointing,
    estimate, fallback reasons, fits)."""
    checkpointing = False
    est = _estimate(method, concretize(recipe, shape, table), shape, inputs, checkpointing)
    if not isinstance(inputs.memory, (int, float)):
        return method, recipe, checkpointing, est, [], None
    budget, steps = inputs.memory * GB, []
    for fallback in table["memory_fallbacks"]:
        if est.memory.total <= budget:
            break
        if fallback["from"] not in ("*", method):
            continue
        target = method if fallback["to"] == "*" else fallback["to"]
        new_recipe = {**table["methods"][target]["config"], **recipe} if target != method else recipe
        new_recipe = {**new_recipe, **{k: min(new_recipe[k], cap) for k, cap in fallback.get("cap", {}).items()}}
        new_checkpointing = checkpointing or fallback.get("training", {}).get("gradient_checkpointing", False)
        if (target, new_recipe, new_checkpointing) == (method, recipe, checkpointing):
            continue  # e.g. "cap r at 8" when r is already 8: not a step worth citing
        needed = est.memory.total / GB
        method, recipe, checkpointing = target, new_recipe, new_checkpointing
        steps.append(Reason(fallback["id"], fallback["source"],
                            f"{fallback['text']} (needed {needed:.1f} GB of {inputs.memory:g} GB)"))
        est = _estimate(method, concretize(recipe, shape, table), shape, inputs, checkpointing)
    return method, recipe, checkpointing, est, steps, est.memory.total <= budget


def choose(inputs: ChooseInputs, table: dict = _TABLE) -> Recommendation:
    """Ranked recommendation for `inputs` (see the module docstring for the stages)."""
    ranking = rank(inputs, table)
    facts = inputs.facts()
    shape = model_shape(inputs.model) if inputs.model is not None else None
    fallback_notes = {f["id"]: f["note"] for f in table["memory_fallbacks"] if "note" in f}
    resolutions = dict(ranking.resolutions)
    kept, pushed = [], []
    for method in ranking.methods:
        recipe = pick_ranges(ranking.recipes[method], facts, table)
        reasons = list(ranking.reasons[method])
        cautions = list(ranking.demotions.get(method, ()))
        numbers: dict = {}
        fits = None
        checkpointing = False
        if shape is not None:
            method, recipe, checkpointing, est, steps, fits = _fit(method, recipe, shape, inputs,
                                                                  table)
            reasons += steps
            resolutions.update({s.rule: fallback_notes[s.rule] for s in steps if s.rule in fallback_notes})
            numbers = dict(trainable_params=est.trainable_params, total_params=est.total_params,
                           training_memory_bytes=est.memory.total,
                           adapter_bytes=est.file_bytes["float32"])
            if fits is False:
                cautions.append(Reason("memory.exhausted", table["memory_exhausted"]["source"],
                                       f"needs {est.memory.total / GB:.1f} GB of {inputs.memory:g} GB: "
                                       f"{table['memory_exhausted']['text']}"))
            over = inputs.storage_mb is not None and numbers["adapter_bytes"] > inputs.storage_mb * 1e6
            if over:
                cautions.append(Reason("storage.exceeded", table["storage_exceeded"]["source"],
                                       f"{numbers['adapter_bytes'] / 1e6:.1f} MB > {inputs.storage_mb:g} MB: "
                                       f"{table['storage_exceeded']['text']}"))
        info = table["methods"][method]
        candidate = dict(method=method, label=info["label"],
                         config=concretize(recipe, shape, table),
                         config_source=info["config_source"],
                         nf4=bool(recipe.get("nf4", False)),
                         # several tasks on one base keep their adapters apart (advice.multi-tenant)
                         merge=bool(recipe.get("merge", False)) and info["mergeable"]
                         and inputs.num_tasks == 1,
                         gradient_checkpointing=checkpointing,
                         inference=f"{info['inference']} ({info['source']})",
                         reasons=tuple(reasons), cautions=tuple(cautions), fits=fits,
                         next_steps={kind: tuple(Reason(f"next.{method}.{kind}", s["source"], s["text"])
                                                 for s in steps_)
                                     for kind, steps_ in table["next_steps"][method].items()},
                         **numbers)
        demote = fits is False or any(c.rule == "storage.exceeded" for c in cautions)
        (pushed if demote else kept).append(candidate)
    candidates = tuple(Candidate(rank=i, **c) for i, c in enumerate(kept + pushed, start=1))
    return Recommendation(inputs, shape.name if shape else None, candidates, ranking.advice,
                          ranking.fired, resolutions)
