"""Stage II: attackers' techniques as registered, composable transforms."""

from ccguard.transforms.base import Framings, Transform, TransformContext, compose, load_framings

__all__ = ["Framings", "Transform", "TransformContext", "compose", "load_framings"]
