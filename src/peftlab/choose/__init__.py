"""`peftlab choose`: the source documents' decision framework as a rule table (`rules.json`) and a pure
function over it, plus recommendations from measured `peftlab compare` results.

    choose(ChooseInputs(task="classification", model="bert-base", memory=8)) -> Recommendation
    recommend_from_report("runs/compare", ChooseInputs(task="classification")) -> ReportRecommendation
"""

from peftlab.choose.engine import (GOALS, SCHEMA, TASKS, Candidate, ChooseInputs, Recommendation,
                                   choose, rank)
from peftlab.choose.report import ReportRecommendation, pareto_front, recommend_from_report
from peftlab.choose.results import ReportError, read_results
from peftlab.choose.rules import Reason, load_rules

__all__ = ["GOALS", "SCHEMA", "TASKS", "Candidate", "ChooseInputs", "Reason", "Recommendation",
           "ReportError", "ReportRecommendation", "choose", "load_rules", "pareto_front", "rank",
           "read_results", "recommend_from_report"]
