"""A source without a dev split gets a seeded, stated hold-out of its training rows (`dev_fraction`)."""

import json

import pytest

from peftlab.data import DataError, load_task


def rows_file(tmp_path, count):
    path = tmp_path / "all.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(count)), encoding="utf-8")
    return path


def test_a_single_file_gets_a_seeded_dev_split_that_is_said(tmp_path):
    path = rows_file(tmp_path, 200)
    task = load_task(str(path))
    assert (len(task.train), len(task.dev)) == (180, 20)
    everything = load_task(str(path), dev_fraction=0).train
    assert set(task.train).isdisjoint(task.dev) and set(task.train) | set(task.dev) == set(everything)
    assert [ex for ex in everything if ex in set(task.train)] == list(task.train)  # file order kept
    assert "20 of 200 training rows" in task.dev_origin and "--dev-fraction 0.1" in task.dev_origin
    assert load_task(str(path)) == task  # the same rows every time
    assert load_task(str(path), dev_seed=1).dev != task.dev
    assert len(load_task(str(path), dev_fraction=0.25).dev) == 50


def test_limits_apply_after_the_hold_out(tmp_path):
    path = rows_file(tmp_path, 200)
    whole = load_task(str(path))
    limited = load_task(str(path), max_train=30, max_dev=5)
    assert limited.train == whole.train[:30] and limited.dev == whole.dev[:5]


def test_causal_lm_holds_out_whole_prompts(tmp_path):
    lines = [json.dumps({"prompt": f"p{i // 4}", "target": f"t{i}"}) for i in range(80)]  # 20 prompts × 4
    (tmp_path / "gen.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = load_task(str(tmp_path / "gen.jsonl"), dev_fraction=0.2)
    held = {ex.prompt for ex in task.dev}
    assert len(held) == 4 and held.isdisjoint(ex.prompt for ex in task.train)
    assert len(task.dev) == 16 and len(task.dev_references) == 4
    assert all(len(group.references) == 4 for group in task.dev_references)
    assert "4 of 20 training prompts" in task.dev_origin


def test_sources_with_their_own_dev_split_are_untouched():
    task = load_task("sst2")
    assert task.dev_origin == "" and len(task.dev) == 872


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True])
def test_a_bad_fraction_is_one_line(tmp_path, bad):
    with pytest.raises(DataError, match="dev fraction .* must be in \\[0, 1\\)"):
        load_task(str(rows_file(tmp_path, 10)), dev_fraction=bad)


def test_too_few_units_to_hold_out_says_what_to_do(tmp_path):
    lines = [json.dumps({"prompt": "only", "target": f"t{i}"}) for i in range(3)]  # three references of one prompt
    (tmp_path / "gen.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="1 training prompts cannot give a dev split.*--dev-fraction"):
        load_task(str(tmp_path / "gen.jsonl"))
