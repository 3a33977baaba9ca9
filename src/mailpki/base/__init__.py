"""Small helpers every layer may use: atomic file writes, strict PEM reading."""
