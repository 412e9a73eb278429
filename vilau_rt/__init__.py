"""vilau_rt: an edge inference runtime for VILA-U (image understanding and generation)."""
