"""numba options of every CPU kernel module: the fast-math flags and the
cache, in one place (see :mod:`softxent.kernels._cpu` for the layout).

Each kernel module decorates its functions with one of these dicts, so that
a change of flags reaches every module at once.
"""

from __future__ import annotations

# Loops that sum get reassoc (so LLVM vectorises the reduction) and contract
# (FMAs); never nnan/ninf: NaN rows must stay NaN and -inf logits are masked
# classes. Everything else, the per-row scalar code above all, is compiled
# without fast-math: reassociation would turn (ties - 1) + r into
# (ties + r) - 1 and lose exactly the tiny terms the numerics keep.
# error_model="numpy": a float division by zero gives inf/NaN instead of
# raising, which also removes the branch that stops LLVM vectorising a loop
# with a division in it.
FAST = {"reassoc", "contract", "nsz", "arcp"}
JIT_SUM = dict(nogil=True, cache=True, fastmath=FAST, error_model="numpy")
JIT = dict(nogil=True, cache=True, error_model="numpy")
JIT_ELEMENT = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
