"""afterimage_rs: the Python afterimage API over the Rust engine.

Generate synthetic multi-turn conversations: a correspondent (a simulated user) and a
respondent (the assistant being trained) talk for up to ``max_turns`` exchanges, many
dialogs at once, and each finished dialog is stored as a JSONL row in the Python
afterimage format. The classes keep upstream's names, so a script written for
``afterimage`` runs with only its import changed::

    from afterimage_rs import ConversationGenerator, ContextualInstructionGeneratorCallback

The run itself (models, retries, key rotation, concurrency, storage) is the Rust
engine's; custom callbacks written in Python (subclasses of
``BaseInstructionGeneratorCallback``, ``BaseRespondentPromptModifierCallback``,
``BaseStoppingCallback``) are called from it, async or sync.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _native
from ._bridge import CallbackError, GenerationError
from .types import GeneratedInstructions, GeneratedResponsePrompt, GenerationState

__version__: str = _native.__version__

__all__ = [
    "BaseInstructionGeneratorCallback",
    "BaseRespondentPromptModifierCallback",
    "BaseStoppingCallback",
    "BaseStorage",
    "CallbackError",
    "ContextualInstructionGeneratorCallback",
    "ConversationGenerator",
    "AsyncConversationGenerator",
    "DocumentProvider",
    "FixedNumberStoppingCallback",
    "GeneratedInstructions",
    "GeneratedResponsePrompt",
    "GenerationError",
    "GenerationReport",
    "GenerationState",
    "InMemoryDocumentProvider",
    "JSONLStorage",
    "PersonaInstructionGeneratorCallback",
    "PersonaUsageStoppingCallback",
    "SimpleInstructionGeneratorCallback",
    "SmartKeyPool",
    "ToolCallingInstructionGeneratorCallback",
    "WithContextRespondentPromptModifier",
    "WithRAGRespondentPromptModifier",
    "__version__",
]


def _cli_main() -> None:
    """The ``afterimage`` command the wheel installs: the Rust CLI, in this process."""
    sys.exit(_native.cli_main(sys.argv))


class SmartKeyPool:
    """Several API keys, rotated: a rate-limited key cools down for its
    ``Retry-After``, a key the provider refuses is retired."""

    def __init__(self, api_keys: Sequence[str]) -> None:
        keys = [api_keys] if isinstance(api_keys, str) else list(api_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("SmartKeyPool needs at least one non-empty key string")
        self.api_keys: List[str] = keys

    @classmethod
    def from_single_key(cls, api_key: str) -> "SmartKeyPool":
        """A pool of one key."""
        return cls([api_key])

    def __len__(self) -> int:
        return len(self.api_keys)

    def __repr__(self) -> str:
        # Keys are secrets: never shown.
        return f"SmartKeyPool({len(self.api_keys)} keys)"


ApiKey = Union[str, SmartKeyPool, Sequence[str], None]


def _keys(api_key: ApiKey) -> List[str]:
    if api_key is None:
        return []
    if isinstance(api_key, SmartKeyPool):
        return list(api_key.api_keys)
    if isinstance(api_key, str):
        return [api_key] if api_key else []
    return list(api_key)


def _model(
    api_key: ApiKey,
    model_name: Optional[str],
    model_provider_name: Optional[str],
    base_url: Optional[str],
) -> Dict[str, Any]:
    return {
        "provider": model_provider_name,
        "model_name": model_name,
        "api_keys": _keys(api_key),
        "base_url": base_url,
    }


class DocumentProvider:
    """Where documents come from (upstream's base class)."""

    def texts(self) -> List[str]:
        """Every document's text."""
        raise NotImplementedError


class InMemoryDocumentProvider(DocumentProvider):
    """Documents given as strings (or dicts with a ``text`` field)."""

    def __init__(self, documents: Sequence[Union[str, Dict[str, Any]]]) -> None:
        self.documents: List[str] = []
        for doc in documents:
            text = doc.get("text") if isinstance(doc, dict) else doc
            if not isinstance(text, str):
                raise TypeError("InMemoryDocumentProvider takes strings or dicts with a 'text' string")
            self.documents.append(text)

    def texts(self) -> List[str]:
        return list(self.documents)


Documents = Union[DocumentProvider, Sequence[str]]


def _texts(documents: Documents) -> List[str]:
    if isinstance(documents, DocumentProvider):
        return documents.texts()
    if isinstance(documents, str):
        return [documents]
    return list(documents)


class BaseInstructionGeneratorCallback:
    """Decides what the simulated user asks first.

    Implement ``generate(original_prompt)`` or ``async agenerate(original_prompt)``
    returning ``GeneratedInstructions``; ``original_prompt`` is the simulated user's
    system prompt (to pick a voice and a language).
    """

    monitor: Any = None

    def set_monitor(self, monitor: Any) -> None:
        """Upstream's hook for its monitor (kept for compatibility; unused)."""
        self.monitor = monitor

    def generate(self, original_prompt: str) -> GeneratedInstructions:
        """A batch of first questions (one or more)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement generate() or agenerate()"
        )

    async def agenerate(self, original_prompt: str) -> GeneratedInstructions:
        """The async form of ``generate``; by default calls it."""
        return self.generate(original_prompt)


class BaseRespondentPromptModifierCallback:
    """Decides what the assistant knows: rewrites its system prompt for one dialog.

    Implement ``generate(respondent_prompt, context, instruction)`` or its async form
    ``agenerate`` returning ``GeneratedResponsePrompt`` (or the prompt as a string).
    ``context`` is the instruction generator's context, ``instruction`` the dialog's
    first question.
    """

    def generate(
        self, respondent_prompt: str, context: str, instruction: str
    ) -> GeneratedResponsePrompt:
        """The respondent's system prompt for a dialog starting with ``instruction``."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement generate() or agenerate()"
        )

    async def agenerate(
        self, respondent_prompt: str, context: str, instruction: str
    ) -> GeneratedResponsePrompt:
        """The async form of ``generate``; by default calls it."""
        return self.generate(respondent_prompt, context, instruction)


class BaseStoppingCallback:
    """Decides when a run has made enough: ``should_stop(state)`` is asked after each
    finished dialog; once it answers ``True`` no new dialog starts."""

    def should_stop(self, state: GenerationState) -> bool:
        """Whether the run should start no new dialogs."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement should_stop()")


class _BuiltIn:
    """A callback the engine implements in Rust; ``_spec`` describes it."""

    def _spec(self) -> Dict[str, Any]:
        raise NotImplementedError


class SimpleInstructionGeneratorCallback(BaseInstructionGeneratorCallback, _BuiltIn):
    """Questions written from the prompts alone (no documents)."""

    def __init__(
        self,
        api_key: ApiKey = None,
        model_name: Optional[str] = None,
        model_provider_name: Optional[str] = None,
        n_instructions: Optional[int] = None,
        base_url: Optional[str] = None,
    ) -> None:
        self._model = _model(api_key, model_name, model_provider_name, base_url)
        self.n_instructions = n_instructions

    def _spec(self) -> Dict[str, Any]:
        return {"kind": "simple", "model": self._model, "n_instructions": self.n_instructions}


class ContextualInstructionGeneratorCallback(BaseInstructionGeneratorCallback, _BuiltIn):
    """Samples documents and asks the model for questions about them.

    Without ``api_key``/``model_name``/``model_provider_name``/``base_url`` it uses the
    generator's model.
    """

    def __init__(
        self,
        api_key: ApiKey = None,
        documents: Documents = (),
        model_name: Optional[str] = None,
        model_provider_name: Optional[str] = None,
        n_instructions: Optional[int] = None,
        num_random_contexts: Optional[int] = None,
        base_url: Optional[str] = None,
    ) -> None:
        self._model = _model(api_key, model_name, model_provider_name, base_url)
        self.documents = _texts(documents)
        if not self.documents:
            raise ValueError(f"{type(self).__name__} needs documents=[...] (none given)")
        self.n_instructions = n_instructions
        self.num_random_contexts = num_random_contexts

    def _spec(self) -> Dict[str, Any]:
        return {
            "kind": "contextual",
            "model": self._model,
            "documents": self.documents,
            "n_instructions": self.n_instructions,
            "num_random_contexts": self.num_random_contexts,
        }


class PersonaInstructionGeneratorCallback(ContextualInstructionGeneratorCallback):
    """Generates personas from each document (layers of five, as deep as the run
    needs, at most ``max_depth``) and asks questions in a persona's voice."""

    def __init__(
        self,
        api_key: ApiKey = None,
        documents: Documents = (),
        model_name: Optional[str] = None,
        model_provider_name: Optional[str] = None,
        n_instructions: Optional[int] = None,
        num_random_contexts: Optional[int] = None,
        base_url: Optional[str] = None,
        max_depth: Optional[int] = None,
    ) -> None:
        super().__init__(
            api_key, documents, model_name, model_provider_name, n_instructions,
            num_random_contexts, base_url,
        )
        self.max_depth = max_depth

    def _spec(self) -> Dict[str, Any]:
        return {**super()._spec(), "kind": "persona", "max_depth": self.max_depth}


class ToolCallingInstructionGeneratorCallback(BaseInstructionGeneratorCallback, _BuiltIn):
    """Requests that need the given tools (OpenAI-style function specs). Unlike
    upstream, the assistant is offered the tools, and the model plays them, so rows
    carry real tool calls."""

    def __init__(
        self,
        api_key: ApiKey = None,
        tools: Sequence[Dict[str, Any]] = (),
        documents: Optional[Documents] = None,
        model_name: Optional[str] = None,
        model_provider_name: Optional[str] = None,
        n_instructions: Optional[int] = None,
        num_tools_to_sample: Optional[int] = None,
        base_url: Optional[str] = None,
    ) -> None:
        self._model = _model(api_key, model_name, model_provider_name, base_url)
        self.tools = list(tools)
        if not self.tools:
            raise ValueError("ToolCallingInstructionGeneratorCallback needs tools=[...] (none given)")
        self.documents = None if documents is None else _texts(documents)
        self.n_instructions = n_instructions
        self.num_tools_to_sample = num_tools_to_sample

    def _spec(self) -> Dict[str, Any]:
        return {
            "kind": "tool_calling",
            "model": self._model,
            "tools": self.tools,
            "documents": self.documents,
            "n_instructions": self.n_instructions,
            "num_tools_to_sample": self.num_tools_to_sample,
        }


class WithContextRespondentPromptModifier(BaseRespondentPromptModifierCallback, _BuiltIn):
    """Puts the documents the dialog's questions came from into the assistant's
    system prompt. ``prompt_template`` holds ``{prompt}`` and ``{context}``."""

    def __init__(self, prompt_template: Optional[str] = None) -> None:
        self.prompt_template = prompt_template

    def _spec(self) -> Dict[str, Any]:
        return {"kind": "context", "prompt_template": self.prompt_template}


class WithRAGRespondentPromptModifier(BaseRespondentPromptModifierCallback, _BuiltIn):
    """Retrieves passages relevant to the dialog's first question (BM25 over chunks of
    ``documents``) and puts them into the assistant's system prompt."""

    def __init__(
        self,
        documents: Documents = (),
        top_k: Optional[int] = None,
        template: Optional[str] = None,
    ) -> None:
        self.documents = _texts(documents)
        if not self.documents:
            raise ValueError("WithRAGRespondentPromptModifier needs documents=[...] to retrieve from")
        self.top_k = top_k
        self.template = template

    def _spec(self) -> Dict[str, Any]:
        return {
            "kind": "rag",
            "documents": self.documents,
            "top_k": self.top_k,
            "template": self.template,
        }


class FixedNumberStoppingCallback(BaseStoppingCallback, _BuiltIn):
    """Stops after exactly ``n`` rows (never overshoots, at any concurrency)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def should_stop(self, state: GenerationState) -> bool:
        return state.num_generated >= self.n

    def _spec(self) -> Dict[str, Any]:
        return {"kind": "fixed", "n": self.n}


class PersonaUsageStoppingCallback(BaseStoppingCallback, _BuiltIn):
    """Stops once ``n_personas`` distinct personas appear among the stored rows."""

    def __init__(self, n_personas: int) -> None:
        self.n_personas = int(n_personas)

    def should_stop(self, state: GenerationState) -> bool:
        return state.unique_personas >= self.n_personas

    def _spec(self) -> Dict[str, Any]:
        return {"kind": "persona_usage", "n_personas": self.n_personas}


class BaseStorage:
    """Where finished rows go (upstream's base class)."""


class JSONLStorage(BaseStorage, _BuiltIn):
    """Rows as JSON lines, in the Python afterimage row format. Without a path,
    ``conversations_YYYYmmdd_HHMMSS.jsonl`` in the working folder. A file that already
    holds rows is refused (a run never mixes into another's output)."""

    def __init__(self, conversations_path: Optional[str] = None) -> None:
        self.conversations_path = None if conversations_path is None else str(conversations_path)

    def _spec(self) -> Dict[str, Any]:
        return {"kind": "jsonl", "path": self.conversations_path}


class GenerationReport:
    """What a run did: ``rows_written``, ``dialogs_failed`` and ``failures`` by cause,
    ``requests``, ``input_tokens``, ``output_tokens``, ``elapsed_secs``,
    ``dialogs_per_sec``, ``stop_reason``, ``output`` (where the rows went), ``run_id``
    and more; ``as_dict()`` has every field."""

    run_id: str
    rows_written: int
    rows_requested: Optional[int]
    dialogs_failed: int
    failures: Dict[str, int]
    regenerations: int
    requests: int
    input_tokens: int
    output_tokens: int
    elapsed_secs: float
    dialogs_per_sec: float
    cost: Optional[float]
    stop_reason: str
    output: str

    def __init__(self, data: Dict[str, Any]) -> None:
        self._data = dict(data)
        for key, value in data.items():
            setattr(self, key, value)

    def as_dict(self) -> Dict[str, Any]:
        """Every field of the report."""
        return dict(self._data)

    def __repr__(self) -> str:
        return (
            f"GenerationReport(rows_written={self.rows_written}, "
            f"dialogs_failed={self.dialogs_failed}, output={self.output!r})"
        )


StoppingCriteria = Optional[Sequence[BaseStoppingCallback]]


class ConversationGenerator:
    """Generates multi-turn conversations.

    ``respondent_prompt`` is the assistant's system prompt; ``api_key`` a key, a
    ``SmartKeyPool`` or a list of keys (default: the provider's variable, such as
    ``GEMINI_API_KEY``); ``model_name`` and ``model_provider_name`` (``gemini``,
    ``openai``, ``anthropic``, ``deepseek``, ``openrouter``, ``local``) the model;
    ``base_url`` another endpoint speaking the provider's API (default: the provider's
    variable, such as ``GOOGLE_GEMINI_BASE_URL`` or ``OPENAI_BASE_URL``).
    ``instruction_generator_callback`` decides what the user asks (default: questions
    from the prompts alone), ``respondent_prompt_modifier`` what the assistant knows,
    ``correspondent_prompt`` the simulated user's fixed prompt (written by the model
    when unset). ``auto_improve`` judges each dialog (with ``evaluator_model_name``)
    and regenerates a poor one a bounded number of times. ``storage`` defaults to a
    timestamped ``JSONLStorage``.
    """

    def __init__(
        self,
        respondent_prompt: str,
        api_key: ApiKey = None,
        model_name: Optional[str] = None,
        model_provider_name: str = "gemini",
        correspondent_prompt: Optional[str] = None,
        instruction_generator_callback: Optional[BaseInstructionGeneratorCallback] = None,
        respondent_prompt_modifier: Optional[BaseRespondentPromptModifierCallback] = None,
        auto_improve: bool = False,
        evaluator_model_name: Optional[str] = None,
        storage: Optional[JSONLStorage] = None,
        base_url: Optional[str] = None,
        llm_factory_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        extra = dict(llm_factory_kwargs or {})
        base_url = base_url or extra.pop("base_url", None)
        if extra:
            raise TypeError(
                f"llm_factory_kwargs: only base_url is supported, not {', '.join(sorted(extra))}"
            )
        if storage is not None and not isinstance(storage, JSONLStorage):
            raise TypeError("storage must be a JSONLStorage")
        self.respondent_prompt = respondent_prompt
        self._model = _model(api_key, model_name, model_provider_name, base_url)
        self.correspondent_prompt = correspondent_prompt
        self.instruction_generator_callback = instruction_generator_callback
        self.respondent_prompt_modifier = respondent_prompt_modifier
        self.auto_improve = bool(auto_improve)
        self.evaluator_model_name = evaluator_model_name
        self.storage = storage

    def _spec(self) -> Tuple[Dict[str, Any], Any, Any]:
        callback = self.instruction_generator_callback
        modifier = self.respondent_prompt_modifier
        instructions: Dict[str, Any] = {"kind": "simple", "model": {}, "n_instructions": None}
        callback_object = None
        if isinstance(callback, _BuiltIn):
            instructions = callback._spec()
        elif callback is not None:
            instructions, callback_object = {"kind": "python"}, callback
        modifier_spec: Optional[Dict[str, Any]] = None
        modifier_object = None
        if isinstance(modifier, _BuiltIn):
            modifier_spec = modifier._spec()
        elif modifier is not None:
            modifier_spec, modifier_object = {"kind": "python"}, modifier
        spec = {
            "respondent_prompt": self.respondent_prompt,
            "model": self._model,
            "correspondent_prompt": self.correspondent_prompt,
            "instructions": instructions,
            "modifier": modifier_spec,
            "auto_improve": self.auto_improve,
            "evaluator_model_name": self.evaluator_model_name,
            "storage": self.storage._spec() if self.storage is not None else None,
        }
        return spec, callback_object, modifier_object

    async def generate(
        self,
        num_dialogs: Optional[int] = None,
        max_turns: int = 1,
        stopping_criteria: StoppingCriteria = None,
        max_concurrency: Optional[int] = None,
        num_requested: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> GenerationReport:
        """Runs the generation and returns its report.

        ``num_dialogs`` rows are written exactly (a failed dialog is replaced within a
        failure budget); ``max_turns`` assistant replies per dialog at most (each
        dialog draws 1..=max_turns); ``max_concurrency`` dialogs in flight (default:
        the provider's); ``stopping_criteria`` any one of which ends the run; without
        a count or a criterion, 5 dialogs. ``seed`` makes turn counts and sampling
        repeatable. Raises ``GenerationError`` when the run stops early (rows written
        are kept) and ``CallbackError`` when a Python callback raised.
        """
        spec, callback, modifier = self._spec()
        stops: List[Dict[str, Any]] = []
        objects: List[Optional[BaseStoppingCallback]] = []
        for criterion in stopping_criteria or ():
            if isinstance(criterion, _BuiltIn):
                stops.append(criterion._spec())
            else:
                stops.append({"kind": "python", "index": len(objects)})
                objects.append(criterion)
        count = num_dialogs if num_dialogs is not None else num_requested
        run = {
            "num_dialogs": count,
            "max_turns": int(max_turns),
            "max_concurrency": max_concurrency,
            "seed": seed,
            "stopping_criteria": stops,
        }
        loop = asyncio.get_running_loop()
        stop = _native.StopHandle()
        # The engine runs in a worker thread with the GIL released; async callbacks
        # come back to this loop. Cancelling this task stops the run: dialogs in
        # flight finish and are stored, no new one starts.
        running = loop.run_in_executor(
            None,
            functools.partial(
                _native.run, json.dumps(spec), json.dumps(run), loop,
                callback, modifier, objects, stop,
            ),
        )
        try:
            report = await asyncio.shield(running)
        except asyncio.CancelledError:
            stop.stop()
            await asyncio.wait([running])
            raise
        return GenerationReport(json.loads(report))


AsyncConversationGenerator = ConversationGenerator
