import pytest

from bpflow import lengths
from bpflow.cli import main as cli_main
from bpflow.utils import BpflowError


@pytest.mark.parametrize(
    "out, layers, w_in, w_out, expected",
    [
        (1000, 9, 25, 25, 3092),  # BPNet OSKN shape
        (1000, 8, 21, 75, 2114),  # ChromBPNet shape
        (1, 0, 1, 1, 1),  # no layers, 1-wide filters: identity length
        (10, 1, 3, 3, 10 + 2 + 4 + 2),  # one dilated layer (dilation 2, width 3) loses 4
    ],
)
def test_needed_input_length_known_values(out, layers, w_in, w_out, expected):
    assert lengths.needed_input_length(out, layers, w_in, w_out) == expected
    assert lengths.output_length_for_input(expected, layers, w_in, w_out) == out
    assert lengths.receptive_field(layers, w_in, w_out) == expected - out + 1


def test_too_short_input_names_needed_length():
    with pytest.raises(BpflowError, match="at least 1115"):
        lengths.output_length_for_input(1114, 8, 21, 75)


def test_length_calc_cli(capsys):
    assert (
        cli_main(
            [
                "length-calc",
                "--output-length",
                "1000",
                "--layers",
                "9",
                "--input-filter-width",
                "25",
                "--output-filter-width",
                "25",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "3092"
    assert (
        cli_main(
            [
                "length-calc",
                "--input-length",
                "2114",
                "--layers",
                "8",
                "--input-filter-width",
                "21",
                "--output-filter-width",
                "75",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "1000"


def test_length_calc_bad_input_exits_nonzero(capsys):
    assert (
        cli_main(
            [
                "length-calc",
                "--output-length",
                "0",
                "--layers",
                "9",
                "--input-filter-width",
                "25",
                "--output-filter-width",
                "25",
            ]
        )
        == 2
    )
    assert "output length must be >= 1" in capsys.readouterr().err
