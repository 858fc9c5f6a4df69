r"""softxent's GPU backend: Triton kernels for cross-entropy and the linear + cross-entropy head.

Importing this package imports nothing heavy (neither torch nor triton);
its modules do, on first use:

* :mod:`._kernels_ce`, :mod:`._kernels_linear`: the ``@triton.jit`` kernels of each
  family, with the derivations beside them, over :mod:`._kernels_common` (the
  device helpers both use: the online max / sum, expm1, log1p, the soft cap);
* :mod:`._host`: the guarded ``triton`` import, the kernels on first
  use (:func:`._host.kernels`), the interpreter or the compiler;
* :mod:`._cross_entropy`: :func:`~._cross_entropy.cross_entropy_rows`, the
  loss, gradient and log-sum-exp of (M, C) logits in one launch;
* :mod:`._linear_head`: :func:`~._linear_head.linear_forward`,
  :func:`~._linear_head.linear_backward` and
  :func:`~._linear_head.linear_cross_entropy_triton`, the head whose logits
  are never stored.

The front end plugs them in for CUDA tensors in :mod:`softxent.torch._triton`
(the ``"cuda"`` kernels of its custom ops). The launches validate, allocate
and launch; they take CPU tensors too when Triton runs in its interpreter
(``TRITON_INTERPRET=1`` set before ``triton`` is first imported): that is how
the tests check the kernels on machines without a GPU.

Design
------
1. **Cross-entropy on logits** (:func:`cross_entropy_rows`): one program per
   row (or per block of rows when the class count is small), two sweeps over
   the row: an online max / sum in float32 (the arg-max term kept out of the
   sum, see :mod:`._kernels_common`), then the loss terms that need the
   log-sum-exp and the gradient, written into a fresh buffer or over the
   logits (``inplace=True``). The mean's denominator (the summed class weights
   of the rows not ignored) is computed on the device by torch and read by
   the kernel from device memory: no host synchronisation inside the call.
2. **Linear cross-entropy** (:func:`linear_cross_entropy_triton`): the forward
   computes (BM, BN) tiles of :math:`z = x W^\top + b` on chip (float32
   accumulators) and keeps only per-row statistics of each vocabulary split
   (max, :math:`s'`, the smoothing sum), combined on the host side in float64
   into the log-sum-exp and the loss: memory O(N) beyond the inputs. The
   backward goes over the vocabulary in chunks: a Triton kernel recomputes a
   chunk's logit tiles and writes its block of :math:`G = \partial L/\partial z`
   (N x chunk, :data:`._linear_head.G_CHUNK_BYTES`), then cuBLAS adds :math:`G W_c` into a
   float32 ``dx`` and forms :math:`dW_c = G^\top x` in one GEMM over all rows
   (float32 accumulation, one rounding to ``weight.dtype``): deterministic,
   and no float32 (V, d) copy of the weight gradient. With gradient filtering
   (off by default) a fused kernel instead skips the matmuls of negligible
   tiles and adds the rest with float32 atomics (Cut Cross-Entropy's scheme).

Data errors (a class index out of range, a fully masked row that is not
ignored) are not raised on the GPU path, since finding them needs a host
sync: such rows give a NaN (or inf) loss. The CPU path raises ``ValueError``.
"""
