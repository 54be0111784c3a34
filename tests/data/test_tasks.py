"""load_task from CSV / TSV / JSONL: column mapping, labels, pairs, errors, validation split."""

import json

import pytest

from peftlab.data import (
    CAUSAL_LM,
    CLASSIFICATION,
    CausalLMExample,
    ClassificationExample,
    DataError,
    load_task,
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_keeps_quotes_and_numeric_label_ids(tmp_path):
    write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s "great"\t1\nbad " film\t0\nok\t1\n')
    write(tmp_path / "dev.tsv", "sentence\tlabel\nmeh\t0\n")
    task = load_task(str(tmp_path))
    assert task.kind == CLASSIFICATION and task.name == tmp_path.name
    assert task.label_names == ("0", "1")
    assert task.train[0] == ClassificationExample('it \'s "great"', 1)
    assert task.train[1].text == 'bad " film'  # an unbalanced quote must not swallow the row
    assert task.dev == (ClassificationExample("meh", 0),)


def test_string_labels_sorted_and_column_mapping(tmp_path):
    write(tmp_path / "data.csv", "review,stars\ngood,pos\n\"bad, really\",neg\nfine,neutral\n")
    task = load_task(str(tmp_path / "data.csv"), text_col="review", label_col="stars", dev_fraction=0)
    assert task.label_names == ("neg", "neutral", "pos")
    assert [ex.label for ex in task.train] == [2, 0, 1]
    assert task.train[1].text == "bad, really"
    assert task.dev == () and task.dev_origin == ""  # dev_fraction=0: the file is a training split only


def test_numeric_labels_sort_numerically(tmp_path):
    write(tmp_path / "t.jsonl", "\n".join(json.dumps({"text": str(i), "label": v}) for i, v in enumerate([10, 2, 1])))
    task = load_task(str(tmp_path / "t.jsonl"), dev_fraction=0)
    assert task.label_names == ("1", "2", "10")
    assert [ex.label for ex in task.train] == [2, 1, 0]


def test_sentence_pairs_from_jsonl(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
            {"sentence1": "c", "sentence2": "d", "label": "contradiction"}]
    write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    write(tmp_path / "validation.jsonl", json.dumps(rows[0]) + "\n")
    task = load_task(str(tmp_path))
    assert task.train == (ClassificationExample("a", 1, "b"), ClassificationExample("c", 0, "d"))
    assert task.dev == (ClassificationExample("a", 1, "b"),)


def test_missing_column_lists_existing_columns(tmp_path):
    write(tmp_path / "d.csv", "review,stars\ngood,1\n")
    with pytest.raises(DataError) as error:
        load_task(str(tmp_path / "d.csv"), kind="classification")
    message = str(error.value)
    assert "review, stars" in message and "\n" not in message
    with pytest.raises(DataError, match="no column 'body'.*columns: review, stars"):
        load_task(str(tmp_path / "d.csv"), text_col="body", label_col="stars")


def test_unknown_dev_label_and_unknown_source(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,x\nc,z\n")
    write(tmp_path / "dev.csv", "text,label\nb,y\n")
    with pytest.raises(DataError, match="'y' does not occur"):
        load_task(str(tmp_path))
    with pytest.raises(DataError, match="sst2, e2e"):
        load_task("no-such-data")


def test_causal_lm_groups_references_and_max_dev(tmp_path):
    write(tmp_path / "train.csv", "mr,ref\nm1,r1\nm2,r2\n")
    write(tmp_path / "dev.csv", 'mr,ref\n"a[1], b[2]",x\nq,y\n"a[1], b[2]",z\nw,v\n')
    task = load_task(str(tmp_path))
    assert task.kind == CAUSAL_LM
    assert task.train == (CausalLMExample("m1", "r1"), CausalLMExample("m2", "r2"))
    assert [(g.prompt, g.references) for g in task.dev_references] == [
        ("a[1], b[2]", ("x", "z")), ("q", ("y",)), ("w", ("v",))]
    limited = load_task(str(tmp_path), max_dev=2, max_train=1)
    assert len(limited.train) == 1
    assert [g.prompt for g in limited.dev_references] == ["a[1], b[2]", "q"]
    assert len(limited.dev) == 3  # both references of the first prompt are kept


def test_explicit_prompt_target_columns(tmp_path):
    write(tmp_path / "t.jsonl", json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    task = load_task(str(tmp_path / "t.jsonl"), prompt_col="question", target_col="answer", dev_fraction=0)
    assert task.kind == CAUSAL_LM and task.train == (CausalLMExample("2+2?", "4"),)


def test_split_validation_classification(tmp_path):
    write(tmp_path / "t.tsv", "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(20)))
    task = load_task(str(tmp_path / "t.tsv"), dev_fraction=0)
    rest, validation = task.split_validation(0.25, seed=3)
    assert len(validation) == 5 and len(rest) == 15
    assert set(rest).isdisjoint(validation) and set(rest) | set(validation) == set(task.train)
    assert task.split_validation(0.25, seed=3) == (rest, validation)  # deterministic
    assert task.split_validation(0.25, seed=4) != (rest, validation)
    assert len(task.split_validation(4)[1]) == 4
    for bad in (0.0, 1.0, 20, 0, True):
        with pytest.raises(DataError, match="validation size"):
            task.split_validation(bad)


def test_split_validation_causal_keeps_prompts_on_one_side():
    task = load_task("e2e")
    rest, validation = task.split_validation(50, seed=0)
    assert len({ex.prompt for ex in validation}) == 50
    assert {ex.prompt for ex in rest}.isdisjoint(ex.prompt for ex in validation)
    assert len(rest) + len(validation) == len(task.train)


def test_folder_file_names_and_ambiguity(tmp_path):
    write(tmp_path / "a.csv", "text,label\nx,1\nz,0\n")
    write(tmp_path / "b.csv", "text,label\ny,1\n")
    task = load_task(str(tmp_path), train_file="a.csv", dev_file="b.csv")
    assert task.train[0].text == "x" and task.dev[0].text == "y"
    with pytest.raises(DataError, match="no train file.*a.csv, b.csv.*train_file="):
        load_task(str(tmp_path))


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\na,1\nb,0\nc,1\n".encode("utf-8"))
    task = load_task(str(tmp_path / "bom.csv"), dev_fraction=0)
    assert [ex.text for ex in task.train] == ["a", "b", "c"]


@pytest.mark.parametrize("rows", [1, 5000])  # the bad byte in the first read block, or far past it
def test_text_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, rows):
    body = b"".join(b"row %d,%d\n" % (i, i % 2) for i in range(rows))
    (tmp_path / "latin.csv").write_bytes(b"text,label\n" + body + b"caf\xe9,1\n")
    with pytest.raises(DataError, match=r"latin\.csv: .*(UTF-8|utf-8)"):
        load_task(str(tmp_path / "latin.csv"), dev_fraction=0)
