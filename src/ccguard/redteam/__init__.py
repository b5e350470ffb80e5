"""Automated red teaming: find evasions of the current classifier and feed them back into training."""
