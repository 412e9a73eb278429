"""Checkpoint -> ONNX engine bundle: the export driver (``export``), the exported graph modules
(``graphs``), the ``vilau`` op schemas and translations (``ops``), and AWQ linears as
``com.microsoft::MatMulNBits`` (``matmul_nbits``)."""
