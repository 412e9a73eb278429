"""AWQ INT4 quantization: the activation-aware search (``awq_search``), its calibration data
(``calibration``), and the checkpoint-level driver behind ``vilau-rt quantize``
(``quantize_checkpoint``)."""
