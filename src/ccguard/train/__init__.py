"""Training loops on accelerate, the training-args dataclass and model cards."""
