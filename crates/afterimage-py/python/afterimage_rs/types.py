"""The values callbacks receive and return (upstream's ``afterimage.types`` and
``afterimage.common``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class GeneratedInstructions:
    """A batch of first user messages, all drawn from the same context.

    ``instructions`` are the questions (each starts one dialog); ``context`` is the
    document text they are about (the row's ``instruction_context``); ``persona`` the
    persona asking; ``context_id``/``context_ids`` the documents' ids (the row's
    ``metadata.context_ids``; derived from the text when unset); ``metadata`` extra row
    metadata.
    """

    instructions: List[str]
    context: Optional[str] = None
    persona: Optional[str] = None
    context_id: Optional[str] = None
    context_ids: Optional[List[str]] = None
    persona_generation_depth: Optional[int] = None
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GeneratedResponsePrompt:
    """The respondent's system prompt for one dialog, and what it was given to know.

    ``prompt`` is the full system prompt; ``context`` what the respondent was given
    (the row's ``response_context``); ``metadata`` extra row metadata.
    """

    prompt: str
    context: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationState:
    """Where a run stands, as stopping callbacks see it."""

    num_generated: int = 0
    """Rows stored so far."""
    num_failed: int = 0
    """Dialogs that failed so far."""
    num_requests: int = 0
    """Model requests so far (all roles, judge included)."""
    prompt_tokens: int = 0
    """Prompt tokens so far."""
    completion_tokens: int = 0
    """Completion tokens so far."""
    unique_personas: int = 0
    """Distinct personas among stored rows."""
    in_flight: int = 0
    """Dialogs running now."""
    elapsed_seconds: float = 0.0
    """Time since the run started."""
    context_visits: Dict[str, int] = field(default_factory=dict)
    """How many stored rows used each document, by id."""

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens so far."""
        return self.prompt_tokens + self.completion_tokens
