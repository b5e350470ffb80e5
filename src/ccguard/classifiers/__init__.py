"""Classifiers: backbones, the input classifier and (later) the streaming output classifier."""
