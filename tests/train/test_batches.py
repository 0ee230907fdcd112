"""Padding-free batches and the chunked loss give the padded model-loss path's loss and gradients, on the embedded
model (full fine-tune and LoRA), with rows of different lengths and prompt parts; a model whose attention crosses
rows is caught by the check padding-free relies on.

Measured (2026-12-02, AMD EPYC, fp32): loss within 2.1e-7 relative, gradients within 1.05e-5 of the largest
gradient entry (LoRA; 4.5e-6 full), for every combination; the bounds below are about 10x that. A row that saw
another, or a label shifted by one, moves the loss in its second digit."""
import pytest
import torch

from tunewise.data.encode import encode_conversation
from tunewise.models.load import load_model, load_tokenizer, resolve_model
from tunewise.train.batches import SftBatches, keeps_rows_apart, use_packed_attention
from tunewise.train.loss import TrainedTokenLoss

CONVERSATIONS = [
    [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是小黄，一个由魔搭训练的人工智能助手。"}],
    [{"role": "user", "content": "12+34=?"}, {"role": "assistant", "content": "12+34=46"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Who are you?"},
     {"role": "assistant", "content": "I am Xiao Huang, an AI assistant developed by ModelScope."},
     {"role": "user", "content": "And 3+4?"}, {"role": "assistant", "content": "3+4=7"}],
    [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
]


@pytest.fixture(scope="module")
def tiny():
    path = str(resolve_model("tunewise-tiny"))
    tokenizer = load_tokenizer(path)
    rows = []
    for messages in CONVERSATIONS:
        ids, labels = encode_conversation(tokenizer, messages)
        rows.append({"input_ids": ids, "labels": labels})
    assert len({len(r["input_ids"]) for r in rows}) == len(rows)  # padding really happens
    return path, tokenizer, rows


def model_of(path, lora: bool):
    torch.manual_seed(0)
    model = load_model(path, "float32")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
        for name, param in model.named_parameters():  # B starts at zero: give it values so A gets gradients too
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    model.train()
    model.config.use_cache = False  # as the Trainer sets it
    return model


def loss_and_grads(model, batch, loss_func, num_items):
    """What Trainer.compute_loss does: with a compute_loss_func the labels are popped and given to it."""
    model.zero_grad()
    batch = dict(batch)
    if loss_func is None:
        loss = model(**batch, num_items_in_batch=num_items).loss
    else:
        labels = batch.pop("labels")
        loss = loss_func(model(**batch), labels, num_items_in_batch=num_items)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(params=["rows_apart_sdpa", "transformers_mask"])
def attention(request):
    """The padding-free paths: tunewise's per-row SDPA (what sft uses) and transformers' block-diagonal mask."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if request.param == "rows_apart_sdpa":
        use_packed_attention()
    yield request.param
    AttentionInterface.register("sdpa", sdpa_attention_forward)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("padding_free, loss_kind", [(True, "model"), (False, "chunks"), (True, "chunks"),
                                                     (False, "inside"), (True, "inside")])
def test_same_loss_and_gradients_as_padded_batches_with_the_models_loss(tiny, attention, lora, padding_free,
                                                                         loss_kind):
    """loss_kind: the model's own loss; the chunked loss with the output layer run outside the model (one process,
    DDP, ZeRO-2), or inside it at the trained positions (ZeRO-3, FSDP)."""
    path, tokenizer, rows = tiny
    num_items = torch.tensor(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))
    model = model_of(path, lora)
    reference = loss_and_grads(model, SftBatches(tokenizer, False)(rows), None, num_items)
    logits = {"model": "all", "chunks": "none", "inside": "trained"}[loss_kind]
    batch = SftBatches(tokenizer, padding_free, logits=logits)(rows)
    if padding_free:
        assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))  # no padding at all
    loss_func = None
    if loss_kind == "chunks":
        loss_func = TrainedTokenLoss(model, chunk_bytes=4 * 6144 * 7)  # chunks of 7 positions: many chunks
        assert loss_func.chunk == 7
    elif loss_kind == "inside":
        loss_func = TrainedTokenLoss(model, inside=True)
    loss, grads = loss_and_grads(model, batch, loss_func, num_items)
    assert loss == pytest.approx(reference[0], rel=3e-6)
    assert grads.keys() == reference[1].keys() and grads
    scale = max(g.abs().max().item() for g in reference[1].values())
    worst = max((grads[n] - g).abs().max().item() for n, g in reference[1].items())
    print(f"loss {loss:.9g} vs {reference[0]:.9g}; gradients: worst {worst:.3g} of scale {scale:.3g}")
    assert worst <= 1e-4 * scale, (worst, scale)


def test_chunked_loss_asks_the_model_for_no_logits_and_evaluates_to_the_mean(tiny):
    path, tokenizer, rows = tiny
    model = model_of(path, lora=False)
    batch = SftBatches(tokenizer, True, logits="none")(rows)
    labels = batch.pop("labels")
    loss_func = TrainedTokenLoss(model)  # before the forward pass: its hook keeps the decoder's output
    with torch.no_grad():
        outputs = model(**batch)
        assert outputs.logits.shape[1] == 0  # the batch's [tokens x vocab] logits never exist
        mean = loss_func(outputs, labels)  # no num_items_in_batch: evaluation's per-batch mean
        reference = model(**SftBatches(tokenizer, False)(rows)).loss
    assert mean.item() == pytest.approx(reference.item(), rel=3e-6)


class IgnoresPositions(torch.nn.Module):
    """A model with its own attention code that ignores position_ids: packed rows would see each other."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, **ignored):  # position_ids and the rows' boundaries
        return self.model(input_ids=input_ids, use_cache=False)


def test_the_check_tells_a_model_that_keeps_rows_apart_from_one_that_does_not(tiny, attention):
    path, _, rows = tiny
    model = model_of(path, lora=False)
    probe = [r["input_ids"][:10] for r in rows[:3]]
    apart, diff, _ = keeps_rows_apart(model, probe)
    assert apart and diff < 1e-4
    apart, diff, _ = keeps_rows_apart(IgnoresPositions(model), probe)
    assert not apart and diff > 0.1
    assert model.training  # the check put the model back in training mode


def test_a_batch_of_packs_is_the_batch_of_their_rows(tiny):
    from tunewise.data.packing import pack_rows

    _, tokenizer, rows = tiny
    packs = pack_rows(rows, 80)
    assert 1 < len(packs) < len(rows)
    collate = SftBatches(tokenizer, True, logits="none")
    packed, plain = collate(packs), collate(sorted(rows, key=lambda r: -len(r["input_ids"])))
    tokens = sorted(zip(plain["input_ids"][0].tolist(), plain["position_ids"][0].tolist(), plain["labels"][0].tolist()))
    assert sorted(zip(packed["input_ids"][0].tolist(), packed["position_ids"][0].tolist(),
                      packed["labels"][0].tolist())) == tokens


def test_a_padding_free_batch_is_attended_row_by_row_without_a_mask(tiny, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    path, tokenizer, rows = tiny
    model = model_of(path, lora=False)
    calls = []
    original = sdpa.sdpa_attention_forward

    def counted(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[2], attention_mask is None))
        return original(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", counted)
    use_packed_attention()
    try:
        batch = SftBatches(tokenizer, True)(rows)
        del batch["labels"]
        with torch.no_grad():
            model(**batch)
    finally:
        from transformers import AttentionInterface

        AttentionInterface.register("sdpa", original)
    lengths = [len(r["input_ids"]) for r in rows]
    assert calls == [(n, True) for n in lengths] * model.config.num_hidden_layers


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("chunk_positions", [10 ** 6, 7], ids=["one_pass", "chunks"])
def test_the_gpu_loss_path_gives_the_models_loss_and_gradients(tiny, lora, chunk_positions):
    """The CUDA path (models/device.py "trained"): the trained positions in one launch when they fit the chunk
    (no recomputation), else recomputed chunks; run here on the CPU with the chunk size given."""
    from tunewise.train.loss import loss_function

    path, tokenizer, rows = tiny
    num_items = torch.tensor(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))
    model = model_of(path, lora)
    use_packed_attention()
    reference = loss_and_grads(model, SftBatches(tokenizer, False)(rows), None, num_items)
    loss_func = loss_function(model, "trained")
    assert loss_func.chunk is None and not loss_func.recompute  # sized from free GPU memory at the first step
    loss_func.chunk = chunk_positions
    calls = []
    original = loss_func.chunk_loss
    loss_func.chunk_loss = lambda h, t: calls.append(len(t)) or original(h, t)
    loss, grads = loss_and_grads(model, SftBatches(tokenizer, True, logits="none")(rows), loss_func, num_items)
    if chunk_positions > num_items.item():  # one launch, no recomputation
        assert calls == [num_items.item()]
    else:  # recomputed in backward: each chunk's head runs twice
        assert len(calls) == 2 * -(-num_items.item() // chunk_positions)
    assert loss == pytest.approx(reference[0], rel=3e-6)
    scale = max(g.abs().max().item() for g in reference[1].values())
    assert max((grads[n] - g).abs().max().item() for n, g in reference[1].items()) <= 1e-4 * scale


def reference_varlen(calls):
    """A varlen kernel's contract in plain torch ([tokens, heads, head_dim], causal within each row), counting its
    calls: what torch.nn.attention.varlen / flash-attn compute on CUDA, so PackedAttention's plumbing (layout, GQA,
    scale, one call per layer) is checked here."""
    import torch.nn.functional as F

    def kernel(query, key, value, bounds, longest, scale):
        calls.append(query.shape[0])
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        b = bounds.tolist()
        assert longest == max(z - a for a, z in zip(b, b[1:]))
        return torch.cat([F.scaled_dot_product_attention(query[a:z].transpose(0, 1), key[a:z].transpose(0, 1),
                                                         value[a:z].transpose(0, 1), is_causal=True,
                                                         scale=scale).transpose(0, 1) for a, z in zip(b, b[1:])])
    return kernel


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_varlen_kernel_attends_a_packed_batch_in_one_call_per_layer(tiny, lora):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    path, tokenizer, rows = tiny
    num_items = torch.tensor(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))
    model = model_of(path, lora)
    AttentionInterface.register("sdpa", sdpa_attention_forward)
    reference = loss_and_grads(model, SftBatches(tokenizer, False)(rows), None, num_items)
    calls = []
    use_packed_attention(reference_varlen(calls), kernel_device="cpu")
    try:
        loss, grads = loss_and_grads(model, SftBatches(tokenizer, True)(rows), None, num_items)
    finally:
        AttentionInterface.register("sdpa", sdpa_attention_forward)
    tokens = sum(len(r["input_ids"]) for r in rows)
    assert calls == [tokens] * model.config.num_hidden_layers  # the whole batch, once per layer
    assert loss == pytest.approx(reference[0], rel=3e-6)
    scale = max(g.abs().max().item() for g in reference[1].values())
    assert max((grads[n] - g).abs().max().item() for n, g in reference[1].items()) <= 1e-4 * scale


def test_torch_has_a_varlen_kernel_and_it_needs_cuda():
    """torch >= 2.10 ships one (the CUDA path's fallback when flash-attn is not installed); on a CPU it cannot run,
    which is why PackedAttention calls it only for CUDA tensors."""
    from tunewise.train.batches import torch_varlen_kernel

    kernel = torch_varlen_kernel()
    assert kernel is not None
    q = torch.randn(6, 2, 16, dtype=torch.bfloat16)
    with pytest.raises((NotImplementedError, RuntimeError)):
        kernel(q, q, q, torch.tensor([0, 2, 6]), 4, None)


def deep_tiny(path, dtype, layers=24):
    """A random model of the embedded model's width with `layers` layers (the depth of Qwen2.5-0.5B)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    config.num_hidden_layers, config.layer_types = layers, ["full_attention"] * layers
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(dtype)


@pytest.mark.parametrize("depth", ["embedded", "deep24"])
def test_the_check_holds_in_bf16_and_still_catches_crossed_rows(tiny, attention, depth):
    """Measured (2026-12-04, AMD EPYC, seed 0 probes; ATEN avx512): packed vs alone in bf16, largest logit
    difference / allowed (4 x bf16's eps x the largest logit): per-row SDPA 0 / 0.46 (embedded) and 0 / 0.051
    (24 layers); transformers' mask path 0.0625 / 0.46 and 0.0117 / 0.051 (first 2 layers; all 24: 0.0176 /
    0.046); a model that ignores the rows 19.7 / 0.46. float32's 1e-4 refused every bf16 run on the H200."""
    from tunewise.train.batches import tolerance

    path, _, rows = tiny
    model = load_model(path, "bfloat16") if depth == "embedded" else deep_tiny(path, torch.bfloat16)
    probe = [r["input_ids"][:12] for r in rows[:3]]
    apart, diff, allowed = keeps_rows_apart(model, probe)
    assert apart and diff <= allowed / 2, (diff, allowed)
    assert tolerance(torch.bfloat16) == 4 * torch.finfo(torch.bfloat16).eps
    if depth == "embedded":
        apart, diff, allowed = keeps_rows_apart(IgnoresPositions(model), probe)
        assert not apart and diff > 10 * allowed


def test_the_check_runs_only_the_first_layers_and_leaves_the_model_whole(tiny):
    path, _, rows = tiny
    model = deep_tiny(path, torch.float32, layers=6)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: seen.append(i))
             for i, layer in enumerate(model.model.layers)]
    apart, _, _ = keeps_rows_apart(model, [r["input_ids"][:8] for r in rows[:2]])
    assert apart and set(seen) == {0, 1}
    assert len(model.model.layers) == 6
    for hook in hooks:
        hook.remove()


def test_packed_steps_have_one_shape_and_the_same_loss(tiny):
    """--packing: each padding-free batch is filled to batch x --max_length tokens by a last row of padding that
    trains nothing and attends only to itself: one shape per step, the same loss and gradients."""
    from tunewise.data.packing import pack_rows

    path, tokenizer, rows = tiny
    packs = pack_rows(rows, 80)
    num_items = torch.tensor(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))
    model = model_of(path, lora=True)
    use_packed_attention()
    plain = SftBatches(tokenizer, True, logits="none")(packs)
    filled = SftBatches(tokenizer, True, logits="none", tokens=len(packs) * 80)(packs)
    assert filled["input_ids"].shape == (1, len(packs) * 80) and plain["input_ids"].shape[1] < len(packs) * 80
    assert filled["cu_seq_lens_q"][-1] == len(packs) * 80
    assert (filled["labels"][0, plain["labels"].shape[1]:] == -100).all()
    reference = loss_and_grads(model, plain, TrainedTokenLoss(model), num_items)
    loss, grads = loss_and_grads(model, filled, TrainedTokenLoss(model), num_items)
    assert loss == pytest.approx(reference[0], rel=1e-6)
    assert all(torch.allclose(grads[n], g, rtol=1e-5, atol=1e-8) for n, g in reference[1].items())
