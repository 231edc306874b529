"""How the Rust engine calls Python callbacks (internal).

The engine calls these functions: the async ones as coroutines on the loop that
awaits ``generate``, ``call_should_stop`` directly. Each checks what the callback
returned and hands it back as JSON, so that a wrong shape is a ``TypeError`` naming
the callback rather than a failure deep in the engine.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Optional

from .types import GeneratedInstructions, GeneratedResponsePrompt, GenerationState


class GenerationError(RuntimeError):
    """The run stopped early; rows already written are kept.

    ``report`` holds what the run did before it stopped (``None`` when it never
    started, for example on invalid settings).
    """

    def __init__(self, message: str, report_json: Optional[str] = None) -> None:
        super().__init__(message)
        from . import GenerationReport

        self.report = GenerationReport(json.loads(report_json)) if report_json else None


class CallbackError(RuntimeError):
    """A Python callback raised; the message names it and ``__cause__`` is its
    exception."""


def _name(callback: Any) -> str:
    return type(callback).__qualname__


async def _call(callback: Any, *args: Any) -> Any:
    method = getattr(callback, "agenerate", None) or getattr(callback, "generate", None)
    if method is None:
        raise TypeError(f"{_name(callback)} has neither agenerate() nor generate()")
    result = method(*args)
    # A subclass may write `async def generate`, which the base `agenerate` returns
    # unawaited.
    while inspect.isawaitable(result):
        result = await result
    return result


def _strings(value: Any, what: str, callback: Any) -> list:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{_name(callback)}: {what} must be a list of strings")
    return list(value)


async def call_instructions(callback: Any, original_prompt: str) -> str:
    """Calls an instruction generator callback; its batch as JSON."""
    result = await _call(callback, original_prompt)
    if isinstance(result, dict):
        result = GeneratedInstructions(**result)
    if not isinstance(result, GeneratedInstructions):
        raise TypeError(
            f"{_name(callback)} returned {type(result).__name__}: "
            "return GeneratedInstructions(instructions=[...], context=...)"
        )
    ids = list(result.context_ids or [])
    if result.context_id and result.context_id not in ids:
        ids.insert(0, result.context_id)
    persona = result.persona
    if persona is not None and not isinstance(persona, str):
        persona = str(persona)
    return json.dumps(
        {
            "instructions": _strings(result.instructions, "instructions", callback),
            "context": result.context,
            "persona": persona,
            "persona_generation_depth": result.persona_generation_depth,
            "context_ids": _strings(ids, "context_ids", callback),
            "metadata": dict(result.metadata or {}),
        }
    )


async def call_modifier(
    callback: Any, respondent_prompt: str, context: str, instruction: str
) -> str:
    """Calls a respondent prompt modifier callback; the prompt as JSON."""
    result = await _call(callback, respondent_prompt, context, instruction)
    if isinstance(result, str):
        result = GeneratedResponsePrompt(prompt=result)
    if not isinstance(result, GeneratedResponsePrompt):
        raise TypeError(
            f"{_name(callback)} returned {type(result).__name__}: "
            "return GeneratedResponsePrompt(prompt=..., context=...)"
        )
    return json.dumps(
        {
            "prompt": str(result.prompt),
            "context": result.context,
            "metadata": dict(result.metadata or {}),
        }
    )


def call_should_stop(callback: Any, state_json: str) -> bool:
    """Calls a stopping callback with the run's state."""
    result = callback.should_stop(GenerationState(**json.loads(state_json)))
    if inspect.isawaitable(result):
        raise TypeError(f"{_name(callback)}.should_stop must be synchronous (def, not async def)")
    return bool(result)
