"""The VILA-U network and its files on disk.

| module | what |
|---|---|
| ``config`` | ``VilaUConfig`` (one dataclass per part), parsed from an official folder or a preset |
| ``siglip`` | the SigLIP vision tower (features of the second-to-last layer) and preprocessing |
| ``rvq`` | the residual quantizer: codebooks, encode, lookup |
| ``pixel_decoder`` | codes -> pixels (post-quant conv + conv decoder) |
| ``projector`` | ``mm_projector`` (mlp2x_gelu) |
| ``llama`` | the LLaMA language model with a static KV cache |
| ``depth`` | the depth transformer: LLM hidden state -> the D codes of one image position |
| ``vilau`` | ``VilaU``, the parts composed |
| ``awq`` | ``W4A16Linear`` and the AutoAWQ GEMM format (pack, unpack, load) |
| ``safetensors_io`` | memory-mapped, validated safetensors reading |
| ``checkpoint`` | the strict loader of the official checkpoint layout |
| ``bundle`` | the engine-bundle manifest written by ``vilau_export.onnx`` |
"""
