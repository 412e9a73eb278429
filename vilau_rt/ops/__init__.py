"""The ``vilau`` ops, one module per runtime that registers them.

| module | registers | over |
|---|---|---|
| ``kernels`` | torch ops ``vilau::rvq_lookup``, ``rvq_encode``, ``w4a16_linear``, ``w4a16_dequantize`` | the csrc kernels in ``vilau_rt._C`` |
| ``native`` | torch op ``vilau::sample_codes`` and the native backend's depth loop | ``vilau_rt._C`` |
| ``depth_decode`` | torch op ``vilau::depth_decode`` (the ONNX ``vilau::DepthDecode`` reference) | ``model.depth`` |
| ``onnxruntime`` | the ``vilau`` domain for ONNX Runtime (``RVQEncode``, ``RVQLookup``, ``DepthDecode``) | the torch ops above |

Importing a module registers its ops; this package imports none of them by itself.
"""
