"""The distributed group's checks."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"nproc_per_node": 0}, "--nproc_per_node 0: must be at least 1."),
    ({"nnodes": 0}, "--nnodes 0: must be at least 1."),
    ({"deepspeed_scheduler": "x"}, "--deepspeed_scheduler x: expected one of flags, keep."),
    ({"fsdp_config": "x.json"}, "--fsdp_config is read only with --fsdp (e.g. --fsdp 'full_shard auto_wrap')."),
    ({"fsdp": "full_shard auto_wrap", "deepspeed": "zero2"},
     "--fsdp full_shard auto_wrap and --deepspeed zero2: two sharding engines; give one."),
])
def test_distributed_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message
