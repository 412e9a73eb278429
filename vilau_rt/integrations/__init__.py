"""Bridges to other engines: Ray Data (``vilau_rt.integrations.ray``, the ``[ray]`` extra)."""
