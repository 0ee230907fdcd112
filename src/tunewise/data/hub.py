"""Dataset folders and Hub dataset ids as rows of training data, read through the `datasets` library.

  a folder written by `save_to_disk`    -> datasets.load_from_disk (a DatasetDict gives its 'train' split)
  any other folder (of .jsonl/.parquet/.csv files, laid out as on the Hub), and a Hub id `owner/name`
                                        -> datasets.load_dataset, the 'train' split
`SPEC#N` samples N rows exactly as it does for a file (readers.sample_indices), so `owner/name#500` is ms-swift's
sampling. A Hub id needs the network the first time (datasets caches it); offline (HF_HUB_OFFLINE=1, or no network)
it is one UserError saying so and how to pass the data as a local file or folder. Rows are named
"SOURCE [split], row N" (1-based, N counted in the split, also when sampled) and cleaned like table rows.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from tunewise.data.readers import Source, sample_indices
from tunewise.data.tables import table_row
from tunewise.errors import UserError, brief

SAVED = ("dataset_dict.json", "state.json")  # what save_to_disk writes at the top of its folder
SPLIT = "train"


@contextmanager
def _quiet():
    """No progress bars or logged errors while a local folder loads: it is quick, and its errors come back as ours."""
    import datasets

    bars, level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _from_disk(path: Path):
    import datasets

    try:
        with _quiet():
            return datasets.load_from_disk(str(path))
    except Exception as e:  # a folder save_to_disk wrote, since changed or cut short
        raise UserError(f"{path}: a dataset folder (it holds {', '.join(n for n in SAVED if (path / n).exists())}) "
                        f"that datasets cannot load ({brief(e, 200)}).") from None


def _from_folder(path: Path):
    import datasets
    from datasets.data_files import EmptyDatasetError
    from datasets.exceptions import DatasetGenerationError

    try:
        with _quiet():
            return datasets.load_dataset(str(path))
    except (EmptyDatasetError, FileNotFoundError):
        raise UserError(f"{path}: is a directory, not a data file, and it holds neither a dataset saved with "
                        "datasets' save_to_disk nor .jsonl/.json/.csv/.parquet files to load.") from None
    except DatasetGenerationError as e:  # the reader's own error (pyarrow's, for JSON) is the cause
        raise UserError(f"{path}: datasets cannot read the data files of this folder "
                        f"({brief(e.__cause__ or e, 200)}).") from None
    except Exception as e:
        raise UserError(f"{path}: datasets cannot load this folder ({brief(e, 200)}).") from None


def _from_hub(source: Source):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    name, local = source.location, "pass a local .jsonl/.json/.csv/.parquet file or a dataset folder instead"
    try:
        return datasets.load_dataset(name)
    except DatasetNotFoundError:
        raise UserError(f"--dataset {source.spec}: no local file or folder has that name, and '{name}' is not a "
                        "dataset on the Hugging Face Hub (or it is gated or private: log in with `hf auth login`; "
                        f"ModelScope ids are not read); {local}.") from None
    except ConnectionError:
        why = "HF_HUB_OFFLINE=1 is set" if datasets.config.HF_HUB_OFFLINE else "no network"
        raise UserError(f"--dataset {source.spec}: no local file or folder has that name, and the Hugging Face Hub "
                        f"cannot be reached to load '{name}' ({why}; datasets has no copy of it); {local}, or load it "
                        "once with network (datasets caches it).") from None
    except Exception as e:
        raise UserError(f"--dataset {source.spec}: datasets cannot load the Hub dataset '{name}' "
                        f"({brief(e, 200)}).") from None


def _train_split(data, label: str):
    """(the rows to train on, their label): a Dataset itself, or a DatasetDict's 'train' split."""
    if not hasattr(data, "keys"):
        return data, label
    if SPLIT not in data:
        splits = list(data)
        raise UserError(f"{label}: has no '{SPLIT}' split (its splits: {', '.join(splits) or 'none'}); tunewise trains "
                        f"on '{SPLIT}', so save the split you mean as a dataset of its own "
                        f"(dataset['{splits[0] if splits else 'NAME'}'].save_to_disk(DIR)) and pass --dataset DIR.")
    return data[SPLIT], f"{label} [{SPLIT}]"


def dataset_rows(source: Source, seed: int) -> list[tuple[str, dict]]:
    """("SOURCE [split], row N", row) for every row of a dataset folder or Hub id, or the N sampled by `SPEC#N`."""
    if source.kind == "hub":
        data, label = _from_hub(source), source.location
    elif any((source.location / name).is_file() for name in SAVED):
        data, label = _from_disk(source.location), str(source.location)
    else:
        data, label = _from_folder(source.location), str(source.location)
    split, label = _train_split(data, label)
    if len(split) == 0:
        raise UserError(f"{label}: holds no rows.")
    indices = list(range(len(split))) if source.count is None else sample_indices(len(split), source.count, seed)
    chosen = split if source.count is None else split.select(indices)
    rows = []
    for i, row in zip(indices, chosen):
        where = f"{label}, row {i + 1}"
        rows.append((where, table_row(row, where)))
    return rows
