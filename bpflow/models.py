"""The model builders: ``soloModel``, ``transformationModel`` and ``combinedModel``.

The function and parameter names follow BPReveal's documented ``models`` module so users can
call them by keyword with the same arguments; head dicts use its hyphenated keys
(``head-name``, ``num-tasks``, ``use-bias-counts``, ...).

Every model takes one-hot DNA of shape (batch, input length, 4), columns A, C, G, T, and
returns a list: each head's profile logits (batch, output length, num-tasks) first, then each
head's log counts (batch, 1), in ``headList`` order.  Output layers are named
``<model>_profile_<head>`` and ``<model>_logcounts_<head>``.

A model passed in (``soloModelIn``, ``biasModel``) may have any name: when it equals a name the
new model gives one of its own layers (``residual``, ``combined_input``, ...), the passed model
is nested in a wrapper with a free name (:func:`_nest_apart`); its weights stay shared.
"""

from __future__ import annotations

import logging
import warnings

import keras

from bpflow import lengths
from bpflow.layers import (
    TRANSFORMATION_TYPES,
    CenterCrop1D,
    LogAddExp,
    ProductLogCounts,
    SimpleTransform,
    check_transformation_types,
)

logger = logging.getLogger(__name__)

TRANSFORMATION_NAMES = ("passthrough", "simple")


# --------------------------------------------------------------------------- validation


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


# how a combined head adds the bias counts (bpflow's head key; BPReveal's way is "sum")
COUNTS_COMBINATIONS = ("sum", "product")


def check_head_list(headList) -> list[dict]:
    """Check BPReveal-style head dicts: ``head-name`` (unique str) and ``num-tasks`` (>= 1)."""
    if not isinstance(headList, (list, tuple)) or not headList:
        raise ValueError(f"headList must be a non-empty list of head dicts, got {headList!r}")
    seen = set()
    for i, head in enumerate(headList):
        if not isinstance(head, dict):
            raise ValueError(f"headList[{i}] must be a dict, got {type(head).__name__}")
        for key in ("head-name", "num-tasks"):
            if key not in head:
                raise ValueError(f"headList[{i}] is missing the key {key!r}")
        name = head["head-name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"headList[{i}]: head-name must be a non-empty string, got {name!r}")
        if name in seen:
            raise ValueError(f"headList[{i}]: duplicate head-name {name!r}")
        seen.add(name)
        _positive_int(head["num-tasks"], f"headList[{i}] ({name}): num-tasks")
        if head.get("counts-combination", "sum") not in COUNTS_COMBINATIONS:
            raise ValueError(
                f"headList[{i}] ({name}): counts-combination must be one of {', '.join(COUNTS_COMBINATIONS)}, "
                f"got {head['counts-combination']!r}"
            )
    return list(headList)


def _check_spec(spec, what: str) -> dict:
    if not isinstance(spec, dict) or spec.get("name") not in TRANSFORMATION_NAMES:
        got = spec.get("name") if isinstance(spec, dict) else spec
        raise ValueError(f"{what}: unknown transformation {got!r}; allowed names: {', '.join(TRANSFORMATION_NAMES)}")
    if spec["name"] == "simple":
        types = spec.get("types")
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, (list, tuple)):
            raise ValueError(
                f"{what}: a 'simple' transformation needs 'types', a list from {list(TRANSFORMATION_TYPES)}"
            )
        try:
            check_transformation_types(types)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
    return spec


# --------------------------------------------------------------------------- solo model


def soloModel(
    inputLength, outputLength, numFilters, numLayers, inputFilterWidth, outputFilterWidth, headList, modelName
):
    """A BPNet: input convolution, dilated residual convolutions, profile and counts heads.

    An ``inputLength`` longer than needed is center-cropped inside the model (with a warning);
    the difference must be even.  A shorter one is a ``ValueError`` naming the needed length.
    """
    headList = check_head_list(headList)
    _positive_int(inputLength, "inputLength")
    _positive_int(outputLength, "outputLength")
    _positive_int(numFilters, "numFilters")
    _positive_int(numLayers, "numLayers", minimum=0)
    _positive_int(inputFilterWidth, "inputFilterWidth")
    _positive_int(outputFilterWidth, "outputFilterWidth")
    if not isinstance(modelName, str) or not modelName:
        raise ValueError(f"modelName must be a non-empty string, got {modelName!r}")

    needed = lengths.needed_input_length(outputLength, numLayers, inputFilterWidth, outputFilterWidth)
    if inputLength < needed:
        raise ValueError(
            f"{modelName}: inputLength {inputLength} is too short: an output length of {outputLength} "
            f"with {numLayers} layers and filter widths {inputFilterWidth}/{outputFilterWidth} needs an "
            f"input length of {needed}"
        )
    if (inputLength - needed) % 2:
        raise ValueError(
            f"{modelName}: inputLength {inputLength} is longer than the needed {needed} by an odd "
            f"number of bases ({inputLength - needed}), so it cannot be center-cropped; use "
            f"{needed} or {needed} + an even number"
        )

    inp = keras.Input((inputLength, 4), name=f"{modelName}_input")
    x = inp
    if inputLength > needed:
        message = (
            f"{modelName}: inputLength {inputLength} is longer than the needed {needed}; the model "
            f"center-crops its input to {needed}"
        )
        logger.warning(message)
        warnings.warn(message, stacklevel=2)
        x = CenterCrop1D(needed, name=f"{modelName}_crop_input")(x)

    x = keras.layers.Conv1D(
        numFilters, inputFilterWidth, padding="valid", activation="relu", name=f"{modelName}_conv_input"
    )(x)
    for i in range(numLayers):
        dilation = 2 ** (i + 1)
        conv = keras.layers.Conv1D(
            numFilters,
            3,
            dilation_rate=dilation,
            padding="valid",
            activation="relu",
            name=f"{modelName}_conv_dil{dilation}",
        )(x)
        cropped = CenterCrop1D(conv.shape[1], name=f"{modelName}_crop_dil{dilation}")(x)
        x = keras.layers.Add(name=f"{modelName}_add_dil{dilation}")([conv, cropped])

    profiles, counts = [], []
    for head in headList:
        name = head["head-name"]
        profile = keras.layers.Conv1D(
            head["num-tasks"], outputFilterWidth, padding="valid", dtype="float32", name=f"{modelName}_profile_{name}"
        )(x)
        if profile.shape[1] != outputLength:  # defensive: the arithmetic above guarantees it
            raise ValueError(
                f"{modelName}: the built profile length {profile.shape[1]} differs from outputLength "
                f"{outputLength}; check the length arithmetic in bpflow.lengths"
            )
        pooled = keras.layers.GlobalAveragePooling1D(name=f"{modelName}_pool_{name}")(x)
        logcounts = keras.layers.Dense(1, dtype="float32", name=f"{modelName}_logcounts_{name}")(pooled)
        profiles.append(profile)
        counts.append(logcounts)
    return keras.Model(inp, profiles + counts, name=modelName)


# --------------------------------------------------------------------------- nesting


def _free_name(base: str, taken: set) -> str:
    """``base``, or ``base_2``, ``base_3``, ... : the first that is not in ``taken``."""
    name, i = base, 1
    while name in taken or f"{name}_input" in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _nest_apart(model, reserved: set, base: str):
    """``model`` itself when its name is none of ``reserved`` (the names of the enclosing
    model's own layers); else a functional wrapper around it named ``base`` (or ``base_2``,
    ...) so that every layer name of the enclosing model stays unique.  The wrapper calls
    ``model`` itself: same weights, same outputs, ``model`` keeps its name inside."""
    if model.name not in reserved:
        return model
    name = _free_name(base, reserved | {model.name})
    inp = keras.Input(model.inputs[0].shape[1:], name=f"{name}_input")
    wrapper = keras.Model(inp, model(inp), name=name)
    wrapper.trainable = model.trainable
    return wrapper


# --------------------------------------------------------------------------- transformation


def _transform(spec: dict, tensor, name: str):
    if spec["name"] == "passthrough":
        return keras.layers.Identity(dtype="float32", name=name)(tensor)
    return SimpleTransform(spec["types"], dtype="float32", name=name)(tensor)


def _check_outputs(model, headList, what: str):
    outputs = model.outputs
    if len(outputs) != 2 * len(headList):
        raise ValueError(
            f"{what} {model.name!r} has {len(outputs)} outputs but headList has {len(headList)} "
            f"heads (expected {2 * len(headList)}: one profile and one counts output per head)"
        )
    for i, head in enumerate(headList):
        tasks = outputs[i].shape[-1]
        if tasks != head["num-tasks"]:
            raise ValueError(
                f"{what} {model.name!r}: head {i} ({head['head-name']}) has {tasks} tasks in the "
                f"model but num-tasks {head['num-tasks']} in headList"
            )


def transformationModel(soloModelIn, profileArchitectureSpecification, countsArchitectureSpecification, headList):
    """Freeze ``soloModelIn`` and pass each output through a trainable transformation.

    Specs: ``{"name": "passthrough"}`` or ``{"name": "simple", "types": [...]}`` with types
    from linear, sigmoid, relu (summed).  Same input and output shapes as the solo model.
    """
    headList = check_head_list(headList)
    profile_spec = _check_spec(profileArchitectureSpecification, "profileArchitectureSpecification")
    counts_spec = _check_spec(countsArchitectureSpecification, "countsArchitectureSpecification")
    _check_outputs(soloModelIn, headList, "soloModelIn")
    soloModelIn.trainable = False
    reserved = {"transformation_input"}
    for h in headList:
        reserved |= {f"transformation_profile_{h['head-name']}", f"transformation_logcounts_{h['head-name']}"}
    solo = _nest_apart(soloModelIn, reserved, "solo_model")

    inp = keras.Input(soloModelIn.inputs[0].shape[1:], name="transformation_input")
    outputs = solo(inp)
    n = len(headList)
    profiles = [
        _transform(profile_spec, outputs[i], f"transformation_profile_{h['head-name']}") for i, h in enumerate(headList)
    ]
    counts = [
        _transform(counts_spec, outputs[n + i], f"transformation_logcounts_{h['head-name']}")
        for i, h in enumerate(headList)
    ]
    return keras.Model(inp, profiles + counts, name="transformation")


# --------------------------------------------------------------------------- combined


def combinedModel(
    inputLength, outputLength, numFilters, numLayers, inputFilterWidth, outputFilterWidth, headList, biasModel
):
    """A residual BPNet plus the frozen ``biasModel``: returns ``(combined, residual, bias)``.

    The bias model sees the input center-cropped to its own input length.  Profile logits add;
    log counts are ``log(exp(bias) + exp(residual))`` for heads with ``use-bias-counts`` true
    (the default) and the residual's alone otherwise.  bpflow's head key ``counts-combination``
    "product" (default "sum", the above) makes the counts follow the profiles instead: the
    combined track is the bias track times the residual's track, read as a fold over the bias,
    position by position (:class:`bpflow.layers.ProductLogCounts`): the residual's counts are
    the log of its total fold, log(N) where it adds nothing over N positions x tasks.
    ``residual`` shares its weights with ``combined``; ``bias`` returns the cropped bias
    model's outputs.  All three take the same
    (batch, inputLength, 4) input.  ``biasModel`` may have any name (even ``residual`` or
    ``bias``): a name that would clash inside ``combined`` or ``bias`` is nested apart.
    """
    headList = check_head_list(headList)
    _check_outputs(biasModel, headList, "biasModel")
    residual = soloModel(
        inputLength, outputLength, numFilters, numLayers, inputFilterWidth, outputFilterWidth, headList, "residual"
    )
    input_length = residual.inputs[0].shape[1]
    bias_length = biasModel.inputs[0].shape[1]
    if bias_length is None:
        raise ValueError("biasModel's input length is not fixed")
    lengths.crop_offset(input_length, bias_length, f"the combined input (biasModel takes {bias_length} bp)")
    for i, head in enumerate(headList):
        bias_out = biasModel.outputs[i].shape[1]
        if bias_out != outputLength:
            raise ValueError(
                f"biasModel's profile output for head {head['head-name']!r} is {bias_out} long, "
                f"but outputLength is {outputLength}"
            )
    biasModel.trainable = False
    # the names of the layers of combined and bias besides the bias model itself
    reserved = {"combined_input", "combined_crop_bias", residual.name}
    for h in headList:
        for prefix in ("combined", "bias"):
            reserved |= {f"{prefix}_profile_{h['head-name']}", f"{prefix}_logcounts_{h['head-name']}"}
    bias_inner = _nest_apart(biasModel, reserved, "bias_model")

    inp = keras.Input((input_length, 4), name="combined_input")
    residual_outputs = residual(inp)
    bias_input = CenterCrop1D(bias_length, name="combined_crop_bias")(inp) if input_length != bias_length else inp
    bias_outputs = bias_inner(bias_input)

    n = len(headList)
    profiles, counts, bias_named = [], [], []
    for i, head in enumerate(headList):
        name = head["head-name"]
        profiles.append(
            keras.layers.Add(dtype="float32", name=f"combined_profile_{name}")([bias_outputs[i], residual_outputs[i]])
        )
        if head.get("use-bias-counts", True) and head.get("counts-combination", "sum") == "product":
            counts.append(
                ProductLogCounts(dtype="float32", name=f"combined_logcounts_{name}")(
                    [bias_outputs[i], residual_outputs[i], bias_outputs[n + i], residual_outputs[n + i]]
                )
            )
        elif head.get("use-bias-counts", True):
            counts.append(
                LogAddExp(dtype="float32", name=f"combined_logcounts_{name}")(
                    [bias_outputs[n + i], residual_outputs[n + i]]
                )
            )
        else:
            counts.append(
                keras.layers.Identity(dtype="float32", name=f"combined_logcounts_{name}")(residual_outputs[n + i])
            )
    for i, head in enumerate(headList):
        bias_named.append(
            keras.layers.Identity(dtype="float32", name=f"bias_profile_{head['head-name']}")(bias_outputs[i])
        )
    for i, head in enumerate(headList):
        bias_named.append(
            keras.layers.Identity(dtype="float32", name=f"bias_logcounts_{head['head-name']}")(bias_outputs[n + i])
        )
    combined = keras.Model(inp, profiles + counts, name="combined")
    bias = keras.Model(inp, bias_named, name="bias")
    return combined, residual, bias
