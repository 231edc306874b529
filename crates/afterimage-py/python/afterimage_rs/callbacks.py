"""The callbacks under upstream's ``afterimage.callbacks`` path."""

from . import (
    BaseInstructionGeneratorCallback,
    BaseRespondentPromptModifierCallback,
    BaseStoppingCallback,
    ContextualInstructionGeneratorCallback,
    FixedNumberStoppingCallback,
    PersonaInstructionGeneratorCallback,
    PersonaUsageStoppingCallback,
    SimpleInstructionGeneratorCallback,
    ToolCallingInstructionGeneratorCallback,
    WithContextRespondentPromptModifier,
    WithRAGRespondentPromptModifier,
)

__all__ = [
    "BaseInstructionGeneratorCallback",
    "BaseRespondentPromptModifierCallback",
    "BaseStoppingCallback",
    "ContextualInstructionGeneratorCallback",
    "FixedNumberStoppingCallback",
    "PersonaInstructionGeneratorCallback",
    "PersonaUsageStoppingCallback",
    "SimpleInstructionGeneratorCallback",
    "ToolCallingInstructionGeneratorCallback",
    "WithContextRespondentPromptModifier",
    "WithRAGRespondentPromptModifier",
]
