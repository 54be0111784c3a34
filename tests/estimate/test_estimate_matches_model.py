"""Every registered method's analytic count (its declared footprint) equals the trainable parameters
of the model peftlab builds, on every architecture of the table, for its defaults and for the
literature settings `peftlab compare` runs."""

from __future__ import annotations

import pytest

import peftlab
from peftlab.core.architectures import ARCHITECTURES
from peftlab.core.registry import declarations
from peftlab.core.shapes import shape_from_config
from peftlab.estimate import Settings, estimate
from tiny_models import TABLE_MODELS, tiny_model

CASES = [pytest.param(d.name, settings, arch, task, id=f"{d.name}-{settings}-{arch}-{task}")
         for d in declarations() for settings in ("defaults", "literature") for arch, task in TABLE_MODELS
         if set(d.needs) <= set(ARCHITECTURES[arch].features)]


@pytest.mark.parametrize("method,settings,arch,task", CASES)
def test_analytic_count_equals_the_applied_model(method, settings, arch, task):
    found = peftlab.core.registry.declaration(method)
    config = found.config_class.from_dict(found.literature.fields if settings == "literature" else {})
    model = peftlab.apply(tiny_model(arch, task), config)
    num_labels = 2 if task == "classification" else None
    analytic = estimate(shape_from_config(model.config.to_dict()), config, Settings(num_labels=num_labels))
    assert analytic.trainable_params == model.count_parameters()[0]
