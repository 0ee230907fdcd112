"""A checkpoint as a reward model: a sequence classifier with one output (transformers'
AutoModelForSequenceClassification, num_labels=1) whose logit at a sequence's last non-padding token is the reward.
`tunewise rlhf --rlhf_type rm` trains one (tunewise.recipes.rm); GRPO's --reward_model scores with one
(tunewise.rewards.models)."""
from __future__ import annotations

from tunewise.errors import UserError, brief

SCORE_HEAD = "score"  # the linear head transformers' *ForSequenceClassification models put on the backbone


def reward_model(checkpoint, tokenizer, dtype: str = "auto", attn_impl: str | None = None, adapter: str = "attached"):
    """The checkpoint (tunewise.models.checkpoint.Checkpoint) as a one-output sequence classifier, its adapter
    "attached" (frozen), "trainable" or "merged" as tunewise.models.checkpoint.load does for causal models. A causal
    (SFT) adapter is read as SEQ_CLS with the score head beside it: its LoRA weights are the same modules'."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from tunewise.models.load import torch_dtype

    kwargs = {"dtype": torch_dtype(dtype), "num_labels": 1}
    if attn_impl:
        kwargs["attn_implementation"] = attn_impl
    try:
        with suppress_seqcls_warning():  # a causal model's lm_head is unused and the score head new: expected
            model = AutoModelForSequenceClassification.from_pretrained(checkpoint.base, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{checkpoint.base}: cannot load the model as a reward model ({brief(e)}).") from e
    set_pad_token(model, tokenizer)
    if checkpoint.adapter is None or adapter == "none":
        return model
    config = PeftConfig.from_pretrained(checkpoint.adapter)
    if SCORE_HEAD in (config.modules_to_save or []):  # an rm checkpoint: the adapter holds its score head
        model = PeftModel.from_pretrained(model, checkpoint.adapter, is_trainable=adapter == "trainable")
    else:
        model = with_causal_adapter(model, checkpoint.adapter, config)
        if adapter == "attached":
            model.requires_grad_(False)
    if adapter != "merged":
        return model
    # peft froze the base weights under the adapter: merged in, the model is one to train whole (full training)
    return model.merge_and_unload().requires_grad_(True)


def with_causal_adapter(model, adapter: str, config):
    """A causal-LM (SFT) LoRA adapter on the sequence classifier: its LoRA weights are those of the same backbone
    modules; peft's SEQ_CLS task adds the score head (modules_to_save), which keeps the value it was drawn with
    (peft reads every saved module from the file, so the new head's is put beside the adapter's weights)."""
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    head = model.get_submodule(SCORE_HEAD).weight.detach().clone()
    config.task_type, config.inference_mode = "SEQ_CLS", False
    config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), SCORE_HEAD]))
    model = get_peft_model(model, config)
    weights = load_peft_weights(adapter)
    weights[f"base_model.model.{SCORE_HEAD}.weight"] = head
    set_peft_model_state_dict(model, weights)
    return model


def set_pad_token(model, tokenizer) -> None:
    """A sequence classifier reads each reward at the last token that is not padding, found by config.pad_token_id;
    batches are padded with the tokenizer's pad token, so the two must agree (Qwen2's configs may have none). Set
    here, and said aloud, where they differ."""
    config = model.config.get_text_config()
    if config.pad_token_id != tokenizer.pad_token_id:
        print(f"rm: the model's config.pad_token_id is {config.pad_token_id}; set to the tokenizer's pad token "
              f"{tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), with which the pairs are padded, so that each "
              "reward is read at the sequence's last real token.", flush=True)
        config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
