"""Hostile-input suite (issue 7): every reader on malicious, truncated or wrong files."""
