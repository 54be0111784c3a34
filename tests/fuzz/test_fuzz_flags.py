"""Fuzz: numeric command-line flags of train, eval, merge, choose and estimate.

Each case gives one to three numeric flags of one command generated text (integers, floats with
NaN and infinities, junk). A value outside its flag's domain (Python's own parse decides) must end
in exit 2 with one `error:` line naming that flag; a value inside passes the flag check and the
command runs to its end: a table (choose, estimate) or, for train/eval/merge, the first error
after the flags (missing data or adapter), again one line. Nothing is ever written.
"""

from __future__ import annotations

import pytest
from fuzz_helpers import CASES, Cli, assert_clean_outcome, files_under
from hypothesis import given
from hypothesis import strategies as st
from train_helpers import write_tiny_model

from peftlab.cli.flags import FLAG_DOMAINS, flag_name, takes_number

COMMANDS = ("train", "eval", "merge", "choose", "estimate")
JUNK = ["", "abc", "1.5", "nan", "NaN", "inf", "-inf", "Infinity", "1e3", "1e400", "0x10", "--", "٣", "5.0",
        " 7 ", "+5", "-0", "1_0", "1,5", "10000000000000000000000000"]


@pytest.fixture(scope="module")
def cli():
    return Cli()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-flags")
    write_tiny_model(root / "model")
    return root


def numeric_flags(cli, command: str) -> list[str]:
    return [flag_name(p) for p in cli.command.get_command(None, command).params
            if flag_name(p) in FLAG_DOMAINS and takes_number(p)]


def base_args(command: str, sandbox) -> list[str]:
    """Arguments under which every accepted flag value reaches a quick, known end."""
    return {
        "train": ["train", "--model", sandbox / "model", "--data", sandbox / "no-data", "--out", sandbox / "out",
                  "--no-progress"],
        "eval": ["eval", sandbox / "no-adapter", "--model", sandbox / "model", "--data", sandbox / "no-data"],
        "merge": ["merge", sandbox / "no-adapter", "--model", sandbox / "model", "--out", sandbox / "merged"],
        "choose": ["choose", "--task", "classification", "--model", "bert-base"],
        "estimate": ["estimate", "bert-base", "--json"],
    }[command]


def expectation(flag: str, text: str) -> str:
    """"accept" / "refuse" when Python's own int() / float() reads `text`; "either" when it cannot
    (typer may still read it, e.g. "5.0" as the integer 5): then only a clean outcome is required."""
    domain = FLAG_DOMAINS[flag]
    try:
        value = int(text) if domain.integer else float(text)
    except ValueError:
        return "either"
    if not text.isascii():
        return "either"
    return "accept" if domain.accepts(value) else "refuse"


values = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-2, max_value=2).map(repr),
    st.sampled_from(JUNK),
    st.text(max_size=6),
)


@st.composite
def cases(draw, cli):
    command = draw(st.sampled_from(COMMANDS))
    flags = draw(st.lists(st.sampled_from(numeric_flags(cli, command)), min_size=1, max_size=3, unique=True))
    return command, [(flag, draw(values)) for flag in flags]


def test_numeric_flags_fuzzed_through_the_cli(cli, sandbox):
    before = files_under(sandbox)
    seen = []

    @given(cases(cli))
    def case(generated):
        command, pairs = generated
        result = cli(*base_args(command, sandbox), *(f"{flag}={text}" for flag, text in pairs))
        error = assert_clean_outcome(result)
        expected = [expectation(flag, text) for flag, text in pairs]
        refused = [flag for (flag, _), e in zip(pairs, expected) if e == "refuse"]
        flag_error = error is not None and error.startswith("error: Invalid value for ")
        if refused:  # named: a refused flag, or one whose text only typer reads
            named = [flag for (flag, _), e in zip(pairs, expected) if e != "accept"]
            assert flag_error and any(f"for {flag}:" in error or f"for '{flag}'" in error for flag in named), error
        elif all(e == "accept" for e in expected):
            assert not flag_error, error
        if command in ("train", "eval", "merge") and not flag_error:
            assert error is not None  # the missing data / adapter ends the run before any work
        assert files_under(sandbox) == before  # nothing written, inside --out or outside it
        seen.append(command)

    case()
    assert len(seen) >= CASES and set(seen) == set(COMMANDS)
