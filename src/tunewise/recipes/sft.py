"""`tunewise sft`: supervised fine-tuning with LoRA or all parameters, on transformers' Trainer.

What sft declares: conversations encoded with the chat template (only the assistant's tokens trained), the base
model (with a new LoRA adapter, or whole), and its batches: padding-free where the model keeps the rows of a packed
batch apart, with the loss computed at the trained positions only (the device plan's loss path).
"""
from __future__ import annotations

from tunewise import ranks
from tunewise.args import SftArgs
from tunewise.data.encode import encode_dataset
from tunewise.data.formats import load_conversations
from tunewise.plan.run import Run
from tunewise.recipes import Recipe


def start_from_base(args: SftArgs, sources: dict):
    """The base model itself; sft sets no flags of its own."""
    from tunewise.models.checkpoint import open_checkpoint as resolve

    return resolve(args.model, [], template=args.template), {}


def models(run: Run) -> dict:
    return {"model": build_model(run)}


def build_model(run: Run):
    from transformers import set_seed

    from tunewise.models.load import load_model
    from tunewise.models.lora import lora_config
    from tunewise.models.quantization import quantization_of

    args = run.args
    set_seed(args.seed)  # peft draws LoRA's A matrices here, before the Trainer seeds: unseeded, no run repeats
    model = load_model(run.model_dir, args.torch_dtype, run.device.attn_impl, quantization_of(args),
                       args.gradient_checkpointing)
    if args.train_type == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))
    return model


def training_device():
    """Where this process trains: its GPU (LOCAL_RANK) when CUDA is visible, else the CPU (None: leave it)."""
    import torch

    return torch.device("cuda", ranks.local_rank()) if torch.cuda.is_available() else None


def batching(run: Run, model) -> tuple[bool, str]:
    """(padding_free, loss path) as this model can honour them: a model whose attention crosses the rows of a
    padding-free batch, or whose forward has no logits_to_keep, trains padded / with its own loss, and says so (an
    error when the flag was given explicitly). The rows check runs the model's first layers on the training device,
    within the tolerance of the run's dtype."""
    import inspect

    from tunewise.errors import UserError
    from tunewise.train.batches import keeps_rows_apart, probe_rows, torch_varlen_kernel, use_packed_attention

    args, notes = run.args, []
    padding_free = args.padding_free
    if padding_free:
        use_packed_attention(torch_varlen_kernel() if run.device.attention == "varlen" else None)
        apart, diff, allowed = keeps_rows_apart(model, probe_rows(run.train_rows), device=training_device())
        if not apart:
            why = (f"this model's attention crosses the rows of a padding-free batch (its outputs for rows packed "
                   f"with restarting position_ids differ from the rows alone by {diff:.3g}, more than the "
                   f"{allowed:.3g} that {args.torch_dtype} rounding allows)")
            if run.sources.get("padding_free") != "default" or args.packing:
                raise UserError(f"--padding_free true: {why}; give --padding_free false"
                                f"{' and leave out --packing' if args.packing else ''}.")
            notes.append(f"note: batches are padded: {why}.")
            padding_free = False
    loss = run.device.loss
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if loss in ("chunks", "trained", "inside") and "logits_to_keep" not in inspect.signature(base.forward).parameters:
        why = f"{type(base).__name__}.forward has no logits_to_keep argument, so its logits cannot be skipped"
        if run.sources.get("chunked_loss") != "default":
            raise UserError(f"--chunked_loss true: {why}; give --chunked_loss false.")
        notes.append(f"note: the model's own loss is used: {why}.")
        loss = "model"
    if ranks.is_main_process():
        for note in notes:
            print(note, flush=True)
    return padding_free, loss


def batches(run: Run, model) -> dict:
    """The collator and the loss: padding-free where the model allows it (`batching`), logits only where trained."""
    from tunewise.train.batches import SftBatches
    from tunewise.train.loss import loss_function

    padding_free, loss = batching(run, model)
    # the engines that shard the output layer hold it whole only inside the model's forward (tunewise.train.loss)
    logits = {"chunks": "none", "trained": "none", "inside": "trained"}.get(loss, "all")
    tokens = run.args.per_device_train_batch_size * run.args.max_length if run.args.packing else None
    return {"data_collator": SftBatches(run.tokenizer, padding_free, logits=logits, tokens=tokens),
            "compute_loss_func": loss_function(model, loss)}


RECIPE = Recipe(
    command="sft",
    args_class=SftArgs,
    dataset_hint="--dataset is required: a .jsonl/.json/.csv/.parquet file, a dataset folder, a Hub id (owner/name), "
                 "SPEC#N, or a built-in set such as self_cognition.",
    load=load_conversations,
    encode=encode_dataset,
    start=start_from_base,
    models=models,
    batches=batches,
)
