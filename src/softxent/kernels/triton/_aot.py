"""Ahead-of-time compilation of the kernel variants the default paths launch, for a GPU that is not here.

Triton compiles for any NVIDIA target without a GPU: its wheel bundles
``ptxas``. :func:`compile_variant` builds one variant for sm_90a (H100/H200)
and reads what decides its occupancy and speed from ``ptxas -v`` (registers
per thread, spill stores and loads) and from Triton's metadata (shared
memory). The tests assert that no default variant spills; the benchmark
notes record the figures (``benchmarks/results/triton_compile_sm90a.md``).

The variants follow the launches (:func:`._linear_head._lce_blocks`,
:func:`._cross_entropy.ce_launch_config`), so a change of a tile size there is
compiled here too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile

import torch

from ._cross_entropy import ce_launch_config
from ._linear_head import _lce_blocks

__all__ = ["Variant", "compile_variant", "default_variants"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: its name in reports, the function, argument types and constants."""

    name: str
    kernel: str  # its name in _host.kernels()
    types: dict  # pointer and float argument types; every other runtime argument is i32
    consts: dict  # constexpr arguments
    num_warps: int
    num_stages: int


_F32 = {n: "fp32" for n in ("eps", "z_loss", "cap", "filter_eps")}


def _ce_types(dtype: str, prob: bool) -> dict:
    # ce_kernel's scalars are float64 arguments (its annotations), cast to the kernel's precision inside.
    return dict(_F32, **{n: "fp64" for n in ("eps", "z_loss", "cap")}, z_ptr=f"*{dtype}",
                y_ptr="*fp32" if prob else "*i64", w_ptr="*fp32", g_ptr=f"*{dtype}",
                loss_ptr="*fp32", lse_ptr="*fp32", scale_ptr="*fp32")  # fmt: skip


def _lin_types(dtype: str) -> dict:
    ptrs = (
        "m_ptr",
        "sp_ptr",
        "d_ptr",
        "zy_ptr",
        "lse_ptr",
        "nll_ptr",
        "ce_ptr",
        "zc_ptr",
        "dx_ptr",
        "dw_ptr",
        "db_ptr",
    )
    return dict(_F32, x_ptr=f"*{dtype}", w_ptr=f"*{dtype}", b_ptr=f"*{dtype}", y_ptr="*i64", flag_ptr="*i32",
                g_ptr=f"*{dtype}", **{n: "*fp32" for n in ptrs})  # fmt: skip


def default_variants() -> list[Variant]:
    """The variants of a bf16 call at LLM sizes (and the float32 head's), options off and all on, each with the
    tiles its launch uses (:func:`._linear_head._lce_blocks`, per kernel and options); and the cross-entropy
    kernel's per-tile reductions (``lanes=False``, the sweep's alternative)."""
    import triton.language as tl

    out = []
    for label, opts in (("plain", {}), ("all options", dict(HAS_WEIGHT=True, SMOOTH=True, ZLOSS=True, SOFTCAP=True))):
        for prob in (False, True):
            rows, block, warps, ce_stages = ce_launch_config(256000, heavy=prob or bool(opts))
            consts = dict(PROB=prob, HAS_WEIGHT=False, SMOOTH=False, ZLOSS=False, SOFTCAP=False, NEED_GRAD=True,
                          ROWS=rows, BLOCK=block, ACC=tl.float32, DOWNCAST=False, STAGES=ce_stages,
                          HINTS=False, LANES=256000 > block, EXP=2)  # fmt: skip
            consts.update(opts)
            kind = "probabilities" if prob else "class indices"
            out.append(Variant(f"ce_kernel bf16, {kind}, {label}", "ce_kernel", _ce_types("bf16", prob), consts,
                               warps, ce_stages))  # fmt: skip
            if not prob:  # the per-tile reductions (lanes=False), the sweep's alternative, with the L2 schedule
                out.append(Variant(f"ce_kernel bf16, {kind}, {label}, per tile", "ce_kernel", _ce_types("bf16", prob),
                                   dict(consts, LANES=False, BLOCK=4096, HINTS=True), 8, ce_stages))  # fmt: skip
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        for label, on in (("plain", False), ("all options", True)):
            opts = dict(HAS_BIAS=on, SMOOTH=on, SOFTCAP=on)
            bm, bn, bk, warps, stages = _lce_blocks(False, torch_dtype, "forward", on)
            tiles = dict(BM=bm, BN=bn, BK=bk, UPCAST=False, IEEE=dtype == "fp32")
            out.append(Variant(f"lce_forward_kernel {dtype}, {label}", "lce_forward_kernel", _lin_types(dtype),
                               dict(opts, **tiles), warps, stages))  # fmt: skip
            for store_g in (True, False):  # the default schedule (G to cuBLAS), the filtered fused one
                bm, bn, bk, warps, stages = _lce_blocks(False, torch_dtype, "backward" if store_g else "fused", on)
                tiles = dict(BM=bm, BN=bn, BK=bk, UPCAST=False, IEEE=dtype == "fp32")
                consts = dict(opts, HAS_NLL=True, NEED_DX=True, NEED_DW=True, NEED_DB=on, FILTER=not store_g,
                              STORE_G=store_g, DOWNCAST=False, **tiles)  # fmt: skip
                what = "G to cuBLAS" if store_g else "filtered, fused"
                out.append(Variant(f"lce_backward_kernel {dtype}, {what}, {label}", "lce_backward_kernel",
                                   _lin_types(dtype), consts, warps, stages))  # fmt: skip
    return out


def _ptxas() -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(90).path if _takes_arch() else get_ptxas().path


def _takes_arch() -> bool:
    import inspect

    from triton.backends.nvidia.compiler import get_ptxas

    return bool(inspect.signature(get_ptxas).parameters)


def compile_variant(v: Variant, capability: int = 90) -> dict:
    """Compile ``v`` for sm_``capability``\\ a; returns registers, spill bytes and shared memory (bytes).

    Runs the bundled ``ptxas -v`` again on Triton's PTX with Triton's own
    options (``--regAllocOptLevel=2``, ``-lineinfo``) to read its report; the
    shared memory is Triton's (the kernel's static and dynamic allocation).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ._host import kernels

    fn = getattr(kernels(), v.kernel)
    sig = {n: ("constexpr" if n in v.consts else v.types.get(n, "i32")) for n in fn.arg_names}
    consts = {(fn.arg_names.index(k),): val for k, val in v.consts.items()}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options=dict(num_warps=v.num_warps, num_stages=v.num_stages))  # fmt: skip
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
        cmd = [_ptxas(), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", path,
               "-o", os.path.join(tmp, "k.o")]  # fmt: skip
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return dict(
        name=v.name, registers=regs, spill_stores=int(spill.group(1)), spill_loads=int(spill.group(2)),
        shared=int(compiled.metadata.shared), num_warps=v.num_warps, num_stages=v.num_stages,
        tiles=", ".join(f"{k}={v.consts[k]}" for k in ("ROWS", "BLOCK", "BM", "BN", "BK") if k in v.consts),
        # libdevice's expf rounds x log2(e) to an integer with fma.rm before its ex2.approx.ftz;
        # tl.exp is a bare mul + ex2.approx.f32.
        libdevice_exp=ptx.count("fma.rm.ftz.f32"),
        fast_exp=ptx.count("ex2.approx.f32"),
    )  # fmt: skip
