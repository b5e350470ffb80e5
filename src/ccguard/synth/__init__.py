"""Stage I: synthetic examples from a constitution's seed bank and a benign pool."""
