"""Command-line text for a combination: `--set part.key=value`, `--set part.lr_scale=...`, typed values."""

from __future__ import annotations

import pytest

from peftlab.cli.options import method_config
from peftlab.errors import ConfigError


def test_settings_go_to_their_part_and_typed_values_to_every_part_that_has_them():
    config = method_config("lora+prompt", {"r": "8"}, ["prompt.num_virtual_tokens=5", "prompt.lr_scale=300",
                                                       "lora.target_modules=query,key"])
    lora, prompt = config.components
    assert lora.config.r == 8 and lora.config.target_modules == ("query", "key") and lora.lr_scale == 1.0
    assert prompt.config.num_virtual_tokens == 5 and prompt.lr_scale == 300.0


@pytest.mark.parametrize("values,settings,message", [
    ({}, ["r=8"], "write part.key=value"),
    ({}, ["ia3.r=8"], "part one of lora, prompt"),
    ({"bottleneck_size": "4"}, [], "no part of lora\\+prompt has option"),
    ({}, ["prompt.r=4"], "method 'prompt' has no option 'r'"),
    ({}, ["prompt.lr_scale=0"], "lr_scale=0.0 is out of range"),
])
def test_bad_combination_settings_are_one_line_errors(values, settings, message):
    with pytest.raises(ConfigError, match=message):
        method_config("lora+prompt", values, settings)
