"""Robots and services: the live camera loop (``live``) and the OpenAI-compatible HTTP server
(``server``, the ``[serve]`` extra)."""
