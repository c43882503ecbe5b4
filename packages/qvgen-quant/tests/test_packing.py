import pytest
import torch

from qvgen.quant.packing import pack_int4, packed_columns, unpack_int4


@pytest.mark.parametrize("cols", [1, 2, 7, 64, 129])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_unpack_int4_inverts_pack_int4(cols: int, bits: int) -> None:
    codes = torch.randint(0, 2**bits, (5, cols), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8
    assert packed.shape == (5, packed_columns(cols))
    assert torch.equal(unpack_int4(packed, cols), codes)


def test_pack_int4_puts_even_column_in_low_nibble_and_pads_odd_tail() -> None:
    codes = torch.tensor([[1, 2, 15]], dtype=torch.int64)
    assert pack_int4(codes).tolist() == [[0x21, 0x0F]]


def test_pack_int4_stores_two_codes_per_byte() -> None:
    codes = torch.randint(0, 16, (96, 256))
    assert pack_int4(codes).numel() == codes.numel() // 2


def test_pack_int4_rejects_codes_outside_nibble_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 15\].*\[0, 16\]"):
        pack_int4(torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match="-1"):
        pack_int4(torch.tensor([[-1, 3]]))


def test_pack_int4_rejects_float_codes_and_wrong_rank() -> None:
    with pytest.raises(TypeError, match="integer"):
        pack_int4(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="2-D"):
        pack_int4(torch.zeros(4, dtype=torch.uint8))


def test_unpack_int4_rejects_width_that_does_not_match_columns() -> None:
    packed = pack_int4(torch.zeros(3, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="10 columns need 5 bytes per row, got 4"):
        unpack_int4(packed, 10)
