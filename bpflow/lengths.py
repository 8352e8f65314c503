"""Length arithmetic of a BPNet with "valid" convolutions.

The first convolution (width ``input_filter_width``) loses ``w - 1`` bases; dilated layer
``i`` (width 3, dilation ``2**(i + 1)``) loses ``2**(i + 2)``; the profile head's convolution
loses ``output_filter_width - 1``.  So for ``L`` layers::

    input = output + (input_filter_width - 1) + (2**(L + 2) - 4) + (output_filter_width - 1)
"""

from __future__ import annotations

import argparse

from bpflow.utils import BpflowError


def _check(num_layers: int, input_filter_width: int, output_filter_width: int) -> None:
    if num_layers < 0:
        raise BpflowError(f"number of layers must be >= 0, got {num_layers}")
    if input_filter_width < 1 or output_filter_width < 1:
        raise BpflowError(f"filter widths must be >= 1, got input {input_filter_width}, output {output_filter_width}")


def lost_bases(num_layers: int, input_filter_width: int, output_filter_width: int) -> int:
    """Bases lost between input and output (the receptive field minus one)."""
    _check(num_layers, input_filter_width, output_filter_width)
    return (input_filter_width - 1) + (2 ** (num_layers + 2) - 4) + (output_filter_width - 1)


def needed_input_length(output_length: int, num_layers: int, input_filter_width: int, output_filter_width: int) -> int:
    """Input length a BPNet needs to predict ``output_length`` bases."""
    if output_length < 1:
        raise BpflowError(f"output length must be >= 1, got {output_length}")
    return output_length + lost_bases(num_layers, input_filter_width, output_filter_width)


def output_length_for_input(
    input_length: int, num_layers: int, input_filter_width: int, output_filter_width: int
) -> int:
    """Largest output length a BPNet can predict from ``input_length`` bases."""
    out = input_length - lost_bases(num_layers, input_filter_width, output_filter_width)
    if out < 1:
        raise BpflowError(
            f"input length {input_length} is too short for this architecture: it needs at least "
            f"{input_length - out + 1} bases to predict one"
        )
    return out


def crop_offset(width: int, length: int, what: str) -> int:
    """Offset of a ``length``-wide window centred in a ``width``-wide one: ``(width - length) / 2``.

    The one check of every centre crop in bpflow (sequences to a model's input, profiles to its
    output): the difference must be even and >= 0, else a one-line BpflowError naming ``what``.
    """
    extra = int(width) - int(length)
    if extra < 0 or extra % 2:
        raise BpflowError(
            f"{what} is {width} bp wide; cannot center-crop it to {length} (the difference must be even and >= 0)"
        )
    return extra // 2


def receptive_field(num_layers: int, input_filter_width: int, output_filter_width: int) -> int:
    return lost_bases(num_layers, input_filter_width, output_filter_width) + 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bpflow length-calc",
        description="Print the input length a BPNet needs for an output length, or the output "
        "length it gives for an input length.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--output-length", type=int, help="print the needed input length")
    which.add_argument("--input-length", type=int, help="print the largest output length")
    parser.add_argument("--layers", type=int, required=True, help="number of dilated layers")
    parser.add_argument("--input-filter-width", type=int, required=True)
    parser.add_argument("--output-filter-width", type=int, required=True)
    args = parser.parse_args(argv)
    arch = (args.layers, args.input_filter_width, args.output_filter_width)
    if args.output_length is not None:
        print(needed_input_length(args.output_length, *arch))
    else:
        print(output_length_for_input(args.input_length, *arch))
    return 0
