"""The data flags: the training and validation sets, the identity they teach, and how rows become batches."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field, not_one_of

TRUNCATION = ("delete", "left", "right")


@dataclass(frozen=True)
class DataArgs:
    dataset: list[str] = flag_field([], "files (.jsonl/.json/.csv/.parquet), dataset folders, Hub ids (owner/name), SPEC#N to sample N rows, or built-in sets (self_cognition)", split_commas=True)
    val_dataset: list[str] = flag_field([], "validation data, same forms as --dataset", split_commas=True)
    split_dataset_ratio: float = flag_field(0.0, "fraction of --dataset held out for validation when --val_dataset is not given")
    model_name: list[str] = flag_field([], "new model name for {{NAME}}: one value, or Chinese then English")
    model_author: list[str] = flag_field([], "new author for {{AUTHOR}}: one value, or Chinese then English")
    max_length: int = flag_field(2048, "longest tokenized conversation")
    truncation_strategy: str = flag_field("delete", "a row longer than --max_length is: delete | left | right (truncated)")
    packing: bool = flag_field(False, "group rows into sequences of up to --max_length tokens (each row keeps its own "
                                      "positions and attention): every sample about the same size; needs --padding_free")
    group_by_length: bool = flag_field(False, "batches of rows of similar length (less padding with --padding_free false)")
    dataset_num_proc: int = flag_field(1, "ms-swift's preprocessing processes: accepted so that its commands run; "
                                          "tunewise reads and encodes the rows in one process (the plan says so)")
    load_from_cache_file: bool = flag_field(False, "ms-swift's reuse of a preprocessing cache: accepted so that its "
                                                   "commands run; tunewise keeps no cache and encodes every run")

    def data_problems(self) -> list[str]:
        problems = not_one_of(self, {"truncation_strategy": TRUNCATION})
        if not 0 <= self.split_dataset_ratio < 1:
            problems.append(f"--split_dataset_ratio {self.split_dataset_ratio}: must be in [0, 1).")
        problems += below_minimum(self, ("max_length", "dataset_num_proc"))
        for flag in ("model_name", "model_author"):
            if len(getattr(self, flag)) > 2:
                problems.append(f"--{flag} takes one or two values (Chinese, English), got {len(getattr(self, flag))}.")
        return problems
