"""tunewise.data.hub: folders saved by datasets' save_to_disk, folders of data files and Hub ids, all through the
`datasets` library; the Hub path runs here on local folders (datasets.load_dataset takes a folder the way it takes an
id) and, offline as every test is (conftest: HF_HUB_OFFLINE=1), a Hub id is one clear error. `#N` samples the same
rows from every kind of source as from a JSONL file."""
import json
import random
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runs import run_cli

from tunewise.data.formats import load_conversations
from tunewise.data.readers import resolve_spec
from tunewise.errors import UserError

ROWS = [{"query": f"q{i}", "response": f"r{i}"} for i in range(7)]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets' Arrow cache of loaded folders goes under the test's folder, not ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def queries(spec, seed=42):
    return [c.messages[0]["content"] for c in load_conversations([str(spec)], seed=seed)]


def test_a_saved_dataset_and_the_train_split_of_a_saved_datasetdict(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "one")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:3]),
                          "test": datasets.Dataset.from_list(ROWS[3:])}).save_to_disk(tmp_path / "two")
    assert queries(tmp_path / "one") == [r["query"] for r in ROWS]
    convs = load_conversations([str(tmp_path / "two")])
    assert [c.messages[0]["content"] for c in convs] == ["q0", "q1", "q2"]
    assert convs[2].origin == f"{tmp_path / 'two'} [train], row 3"


def test_a_datasetdict_without_a_train_split_names_its_splits(tmp_path):
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "d")
    with pytest.raises(UserError, match=r"d: has no 'train' split \(its splits: validation, test\).*"
                                        r"dataset\['validation'\]\.save_to_disk\(DIR\)"):
        load_conversations([str(tmp_path / "d")])


def test_a_bad_row_of_a_saved_dataset_is_named_by_split_and_row(tmp_path):
    datasets.Dataset.from_list(ROWS[:2] + [{"query": "q", "response": " "}]).save_to_disk(tmp_path / "d")
    with pytest.raises(UserError, match=r"d, row 3: field 'response' is empty"):
        load_conversations([str(tmp_path / "d")])


def test_a_saved_folder_that_is_broken_is_one_error(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "d")
    (tmp_path / "d" / "state.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match=r"d: a dataset folder \(it holds state\.json\) that datasets cannot load"):
        load_conversations([str(tmp_path / "d")])


def test_a_folder_of_data_files_loads_like_a_hub_dataset(tmp_path):
    write_jsonl(tmp_path / "jsonl" / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "jsonl" / "test.jsonl", ROWS[:1])
    assert queries(tmp_path / "jsonl") == [r["query"] for r in ROWS]
    (tmp_path / "parquet" / "data").mkdir(parents=True)  # the Hub's own layout: data/<split>-00000-of-00001.parquet
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "parquet" / "data" / "train-00000-of-00001.parquet")
    convs = load_conversations([str(tmp_path / "parquet")])
    assert [c.messages[0]["content"] for c in convs] == [r["query"] for r in ROWS]
    assert convs[0].origin == f"{tmp_path / 'parquet'} [train], row 1"


def test_a_folder_with_rows_of_mixed_forms(tmp_path):
    rows = [ROWS[0], {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    write_jsonl(tmp_path / "d" / "train.jsonl", rows)  # datasets fills each row's missing columns with null
    assert [c.messages[-1]["content"] for c in load_conversations([str(tmp_path / "d")])] == ["r0", "yo"]


def test_a_folder_without_data_and_a_folder_datasets_cannot_read(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: is a directory, not a data file, and it holds neither"):
        load_conversations([str(tmp_path / "empty")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_text('{"query": "a", "response": "b"}\n{"query": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad: datasets cannot read the data files of this folder \(ArrowInvalid: "):
        load_conversations([str(tmp_path / "bad")])


def test_sampling_picks_the_same_rows_from_every_kind_of_source(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("query,response\n" + "".join(f"{r['query']},{r['response']}\n" for r in ROWS))
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    write_jsonl(tmp_path / "folder" / "train.jsonl", ROWS)
    for count in (3, 7, 16):
        picked = random.Random(5).sample(ROWS, min(count, 7))  # the rule since PATH#N came: sample, then extra passes
        expected = [r["query"] for r in picked][:count]
        samples = {name: queries(f"{tmp_path / name}#{count}", seed=5)
                   for name in ("d.jsonl", "d.parquet", "d.csv", "saved", "folder")}
        assert all(s == samples["d.jsonl"] for s in samples.values()), samples
        assert samples["d.jsonl"][:7] == expected and len(samples["d.jsonl"]) == count


def test_a_sampled_row_keeps_its_own_row_number(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "d")
    for conv in load_conversations([f"{tmp_path / 'd'}#3"], seed=1):
        assert conv.origin.endswith(f", row {int(conv.messages[0]['content'][1:]) + 1}")


@pytest.mark.parametrize("spec, kind, location, count", [
    ("AI-ModelScope/alpaca-gpt4-data-en#500", "hub", "AI-ModelScope/alpaca-gpt4-data-en", 500),
    ("tatsu-lab/alpaca", "hub", "tatsu-lab/alpaca", None),
    ("self_cognition#3", "file", None, 3),
])
def test_what_a_spec_names(spec, kind, location, count):
    source = resolve_spec(spec, {"self_cognition": Path(__file__)})
    assert (source.kind, source.count) == (kind, count)
    assert location is None or source.location == location


def test_a_missing_local_path_is_no_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for spec in ("data/train", "owner/name.jsonl", "a/b/c", "missing"):
        with pytest.raises(UserError, match=f"--dataset {spec}: no such file"):
            resolve_spec(spec, {})
    with pytest.raises(UserError, match=r"owner/name#x: the part after '#' must be a positive number"):
        resolve_spec("owner/name#x", {})


def test_a_hub_id_offline_is_one_error_that_says_what_to_do(tmp_path, capsys):
    spec = "AI-ModelScope/alpaca-gpt4-data-en#500"
    with pytest.raises(UserError, match=r"--dataset AI-ModelScope/alpaca-gpt4-data-en#500: no local file or folder has "
                                        r"that name, and the Hugging Face Hub cannot be reached to load 'AI-ModelScope/"
                                        r"alpaca-gpt4-data-en' \(HF_HUB_OFFLINE=1 is set; .*pass a local \.jsonl"):
        load_conversations([spec])
    out = tmp_path / "out"
    assert run_cli("plan", "--dataset", spec, "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunewise plan: error: --dataset AI-ModelScope") and err.count("\n") == 1, err
    assert not out.exists()


def test_plan_reads_a_dataset_folder(tmp_path, capsys):
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "d")
    assert run_cli("plan", "--dataset", f"{tmp_path / 'd'}#5", "--output_dir", tmp_path / "out") == 0
    assert "train data: 5/5 rows kept" in capsys.readouterr().out
