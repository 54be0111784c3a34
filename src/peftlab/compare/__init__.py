"""`peftlab compare`: every method on one budget, measured side by side.

    from peftlab.compare import make_plan, run_compare
    results = run_compare(make_plan(model="minilm", data="sst2", methods="full,lora,prompt"), "out")

`plan` (budget, literature defaults) → `worker` (one method per fresh process: parameters, file
size, peak memory, quality, merge error) → `timing` (step time and latency, interleaved) →
`estimates` (the analytic prediction beside each figure) → `results` (results.json schema) →
`report` (report.md, console table) and `charts` (PNGs). `run` ties them together.
"""

from peftlab.compare.plan import PROFILES, Budget, ComparePlan, MethodPlan, make_plan
from peftlab.compare.run import run_compare

__all__ = ["Budget", "ComparePlan", "MethodPlan", "PROFILES", "make_plan", "run_compare"]
