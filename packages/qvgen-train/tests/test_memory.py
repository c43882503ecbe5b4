"""The memory plan of the train README: computed from the real Wan configs (meta device, no weights)."""

from qvgen.train.memory import ADAMW_FP32, GIB, memory_plan, table


def test_fsdp2_shards_the_student_states_and_keeps_phi_and_teacher_whole():
    ddp = memory_plan("wan2.1-t2v-14b", world_size=8, sharding="ddp")
    fsdp = memory_plan("wan2.1-t2v-14b", world_size=8, sharding="fsdp2")
    assert 14.0e9 < ddp.student_params < 14.5e9  # Wan2.1-T2V-14B
    assert ddp.student_bytes == ddp.student_params * ADAMW_FP32
    assert fsdp.student_bytes * 8 >= ddp.student_bytes > (fsdp.student_bytes - 1) * 8
    assert fsdp.phi_bytes == ddp.phi_bytes and fsdp.teacher_bytes == ddp.teacher_bytes
    assert ddp.total_bytes > 80e9 > fsdp.total_bytes  # 14B needs FSDP on 80 GB cards


def test_table_lists_both_models_under_both_shardings():
    text = table()
    assert text.count("| wan2.1-t2v-1.3b |") == 2 and text.count("| wan2.1-t2v-14b |") == 2
    small = memory_plan("wan2.1-t2v-1.3b", sharding="ddp")
    assert small.total_bytes < 30 * GIB


def test_wan22_ti2v_5b_has_its_line_and_needs_fsdp2_on_80gb_cards():
    assert table().count("| wan2.2-ti2v-5b |") == 2
    ddp = memory_plan("wan2.2-ti2v-5b", sharding="ddp")
    fsdp = memory_plan("wan2.2-ti2v-5b", sharding="fsdp2")
    assert 4.95e9 < ddp.student_params < 5.1e9  # Wan2.2-TI2V-5B (+ quantizer parameters)
    assert ddp.total_bytes > 80e9 > fsdp.total_bytes  # configs/wan2.2-ti2v-5b-qvgen.yaml shards with FSDP2


def test_wan22_a14b_plans_one_expert_and_needs_fsdp2_on_80gb_cards():
    assert table().count("| wan2.2-t2v-a14b |") == 2
    ddp = memory_plan("wan2.2-t2v-a14b", sharding="ddp")
    fsdp = memory_plan("wan2.2-t2v-a14b", sharding="fsdp2")
    assert 14.0e9 < ddp.student_params < 14.5e9  # one expert (expert: both trains them one after the other)
    assert ddp.total_bytes > 80e9 > fsdp.total_bytes  # configs/wan2.2-t2v-a14b-qvgen.yaml shards with FSDP2
