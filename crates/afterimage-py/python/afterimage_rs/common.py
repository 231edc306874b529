"""``GeneratedInstructions`` under upstream's ``afterimage.common`` path."""

from .types import GeneratedInstructions

__all__ = ["GeneratedInstructions"]
