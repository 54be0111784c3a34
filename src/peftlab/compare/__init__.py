"""`peftlab compare`: every method on one budget, measured side by side.

    from peftlab.compare import make_plan, run_compare
    results = run_compare(make_plan(model="minilm", data="sst2", methods="full,lora,prompt"), "out")

`plan` (budget, literature defaults) → `lengths` (max_length fitted to the data) → `lr_choice`
(each method's rate chosen on a validation split: a probe, or a `sweep`) → `worker` running
`runs` (one method and seed per fresh process: parameters, file size, tensor peak and RSS, dev
scores per unit, merge error) → `timing` (step time and latency, interleaved rounds until every
ratio is known to ±5 %) → `quality` (intervals from `stats`, learned or not, tiers) and
`estimates` (the analytic prediction at each method's peak step) → `results` (results.json
schema) → `report` (report.md, console table, with `claims` and `figures`) and `charts` (PNGs).
`run` ties them together.
"""

from peftlab.compare.plan import PROFILES, Budget, ComparePlan, MethodPlan, make_plan
from peftlab.compare.run import run_compare

__all__ = ["Budget", "ComparePlan", "MethodPlan", "PROFILES", "make_plan", "run_compare"]
