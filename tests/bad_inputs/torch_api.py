"""Bad-input rows for the torch_api layer (see tests/bad_inputs/__init__.py for the row types).

Every message must use PyTorch's argument names (input, target, weight,
ignore_index, x, bias, ...), never the NumPy layer's (logits, labels,
sample_weight). torch is imported inside the calls: this module imports
without it, and its rows are skipped then.
"""

from __future__ import annotations

from . import Case


def _ce(input=None, target=None, **kwargs):
    """softxent.torch.cross_entropy on (3, 4) float32 logits and targets [0, 1, 2] unless given."""
    import torch

    import softxent.torch as sxt

    if input is None:
        input = torch.zeros(3, 4)
    if target is None:
        target = torch.tensor([0, 1, 2])
    return sxt.cross_entropy(input, target, **kwargs)


def _lce(x=None, weight=None, target=None, **kwargs):
    """softxent.torch.linear_cross_entropy with x (3, 2), weight (5, 2), targets [0, 1, 2] unless given."""
    import torch

    import softxent.torch as sxt

    x = torch.zeros(3, 2) if x is None else x
    weight = torch.zeros(5, 2) if weight is None else weight
    target = torch.tensor([0, 1, 2]) if target is None else target
    return sxt.linear_cross_entropy(x, weight, target, **kwargs)


def _t(make):
    """A tensor built by ``make(torch)`` at call time."""
    import torch

    return make(torch)


def _row(id, call, error, match):
    return Case(layer="torch", id=id, call=call, error=error, match=match, needs="torch")


CASES: list = [
    # cross_entropy: data
    _row("masked_row_not_ignored",
         lambda tmp: _ce(_t(lambda t: torch_masked(t)), _t(lambda t: t.tensor([0, 1]))),
         ValueError, r"^row 0 of input \(the batch flattened\) is -inf for every class.*its target asks for a loss; "
                     r"give it ignore_index=-100 to skip it$"),
    _row("masked_row_probability_target",
         lambda tmp: _ce(_t(lambda t: torch_masked(t)), _t(lambda t: t.full((2, 2), 0.5))),
         ValueError, r"row 0 of input .* give its target row all zeros to skip it"),
    _row("target_out_of_range", lambda tmp: _ce(target=_t(lambda t: t.tensor([0, 1, 4]))),
         ValueError, r"target must hold class indices in \[0, 4\) for 4 classes .*got 4 at index \(2,\)"),
    _row("target_negative_not_ignore_index", lambda tmp: _ce(target=_t(lambda t: t.tensor([0, -1, 2]))),
         ValueError, r"target must hold class indices in \[0, 4\).*\(or ignore_index=-100 .*got -1 at index \(1,\)"),
    _row("target_wrong_shape", lambda tmp: _ce(target=_t(lambda t: t.tensor([[0], [1], [2]]))),
         ValueError, r"target must hold class indices of shape \(3,\) .*got shape \(3, 1\)"),
    _row("target_float_indices", lambda tmp: _ce(target=_t(lambda t: t.tensor([0.0, 1.0, 2.0]))),
         ValueError, r"target holds probabilities \(dtype torch.float32\), so it must have the input's shape "
                     r"\(3, 4\), got \(3,\); class indices need an integer dtype"),
    _row("target_probability_negative", lambda tmp: _ce(target=_t(lambda t: -t.ones(3, 4))),
         ValueError, r"target holds class probabilities, which must be finite and non-negative, got -1.0"),
    _row("input_integer_dtype", lambda tmp: _ce(_t(lambda t: t.zeros(3, 4, dtype=t.int64))),
         TypeError, r"input must have a floating dtype .*got torch.int64"),
    _row("input_zero_classes", lambda tmp: _ce(_t(lambda t: t.zeros(3, 0))),
         ValueError, r"input must have at least one class along axis 1, got shape \(3, 0\)"),
    # cross_entropy: class weights
    _row("weight_wrong_length", lambda tmp: _ce(weight=_t(lambda t: t.ones(3))),
         ValueError, r"weight must have shape \(4,\) \(one per class\), got \(3,\)"),
    _row("weight_integer_dtype", lambda tmp: _ce(weight=_t(lambda t: t.ones(4, dtype=t.int64))),
         TypeError, r"weight must have a floating dtype .*got torch.int64"),
    _row("weight_other_device", lambda tmp: _ce(weight=_t(lambda t: t.ones(4, device="meta"))),
         ValueError, r"weight is on meta but input is on cpu"),
    _row("weight_negative", lambda tmp: _ce(weight=_t(lambda t: t.tensor([1.0, -1.0, 1.0, 1.0]))),
         ValueError, r"weight must be finite and non-negative, got -1.0 at index \(1,\)"),
    _row("module_weight_not_a_tensor",
         lambda tmp: __import__("softxent.torch", fromlist=["x"]).CrossEntropyLoss(weight=[1.0, 2.0]),
         TypeError, r"weight must be a torch.Tensor .*got list"),
    # options
    _row("label_smoothing_above_one", lambda tmp: _ce(label_smoothing=1.5),
         ValueError, r"label_smoothing must lie in \[0, 1\], got 1.5"),
    _row("label_smoothing_nan", lambda tmp: _ce(label_smoothing=float("nan")),
         ValueError, r"label_smoothing must be finite, got nan"),
    _row("reduction_typo", lambda tmp: _ce(reduction="meen"),
         ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'meen'"),
    _row("ignore_index_float", lambda tmp: _ce(ignore_index=-100.0),
         TypeError, r"ignore_index must be an integer, got -100.0"),
    # linear_cross_entropy
    _row("linear_weight_feature_mismatch", lambda tmp: _lce(weight=_t(lambda t: t.zeros(5, 3))),
         ValueError, r"linear_weight must have shape \(V, 2\) for input of shape \(3, 2\), got \(5, 3\)"),
    _row("linear_zero_classes", lambda tmp: _lce(weight=_t(lambda t: t.zeros(0, 2))),
         ValueError, r"weight must have at least one row \(class\)"),
    _row("linear_dtype_mismatch", lambda tmp: _lce(weight=_t(lambda t: t.zeros(5, 2, dtype=t.float64))),
         TypeError, r"input, linear_weight and linear_bias must have one dtype, got torch.float32, torch.float64"),
    _row("linear_probability_target_shape", lambda tmp: _lce(target=_t(lambda t: t.full((3, 4), 0.25))),
         ValueError, r"target holds probabilities \(dtype torch.float32\), so it must have the logits' shape "
                     r"\(3, 5\), got \(3, 4\)"),
    _row("linear_old_style_weight_keyword",
         lambda tmp: __import__("softxent.torch", fromlist=["x"]).linear_cross_entropy(
             _t(lambda t: t.zeros(3, 2)), weight=_t(lambda t: t.zeros(5, 2)), target=_t(lambda t: t.tensor([0, 1, 2]))),
         TypeError, r"weight is the class weights, shape \(V,\).*pass the head's matrix as linear_weight"),
    _row("linear_target_out_of_range", lambda tmp: _lce(target=_t(lambda t: t.tensor([0, 5, 1]))),
         ValueError, r"target must hold class indices in \[0, 5\) .*got 5 at index \(1,\)"),
    _row("linear_chunk_size_zero", lambda tmp: _lce(chunk_size=0),
         ValueError, r"chunk_size must be a positive integer \(rows per block\) or None, got 0"),
    _row("linear_module_chunk_size_negative",
         lambda tmp: __import__("softxent.torch", fromlist=["x"]).LinearCrossEntropyLoss(chunk_size=-4),
         ValueError, r"chunk_size must be a positive integer \(rows per block\) or None, got -4"),
    _row("linear_shift_one_position",
         lambda tmp: _lce(_t(lambda t: t.zeros(2, 1, 2)), target=_t(lambda t: t.zeros(2, 1, dtype=t.int64)),
                          shift=True),
         ValueError, r"shift=True .* needs sequences of at least 2 positions .*got x of shape \(2, 1, 2\)"),
    _row("linear_masked_row",
         lambda tmp: _lce(_t(lambda t: t.tensor([[float("inf"), 0.0], [1.0, 0.0], [0.0, 0.0]])),
                          _t(lambda t: -t.ones(5, 2))),
         ValueError, r"^row 0 of input @ linear_weight.T \+ linear_bias \(the batch flattened\) is -inf for every class"),
]  # fmt: skip


def torch_masked(t):
    """(2, 2) logits whose row 0 is -inf everywhere (every class masked)."""
    return t.tensor([[-float("inf"), -float("inf")], [0.0, 1.0]])
