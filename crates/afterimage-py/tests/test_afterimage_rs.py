"""The wheel as a Python user meets it: the seed's example, custom callbacks written
in Python (sync and async), errors that name the callback, and the `afterimage`
command on PATH. Every run talks real HTTP to the project's mock server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import afterimage_rs
from afterimage_rs import (
    BaseInstructionGeneratorCallback,
    BaseRespondentPromptModifierCallback,
    BaseStoppingCallback,
    CallbackError,
    ConversationGenerator,
    GeneratedInstructions,
    GeneratedResponsePrompt,
    JSONLStorage,
)

from conftest import run_script

EXAMPLES = Path(__file__).parent / "examples"


def read_rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_dialog(row: dict) -> None:
    roles = [m["role"] for m in row["conversations"]]
    assert roles, row
    assert roles[0] == "user"
    assert all(a != b for a, b in zip(roles, roles[1:])), roles
    assert all(m["content"].strip() for m in row["conversations"])


def test_the_seeds_complete_example_runs_with_only_its_import_changed(mock_env):
    done = run_script(EXAMPLES / "seed_complete_example.py", mock_env)
    assert done.returncode == 0, done.stderr
    assert "Done. Conversation data saved to JSONL." in done.stdout
    # The default storage: one timestamped JSONL file in the working folder.
    (output,) = list(mock_env.glob("conversations_*.jsonl"))
    rows = read_rows(output)
    assert len(rows) == 10
    docs = {
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
        "To reset your password, click 'Forgot Password' on the login screen.",
    }
    for row in rows:
        check_dialog(row)
        assert len(row["conversations"]) <= 6
        # The modifier showed the assistant the document the question was about.
        assert row["instruction_context"] in docs
        assert row["instruction_context"] in row["response_context"]
        # auto_improve=True: every row was judged.
        assert "final_score" in row and "evaluation" in row


def test_the_custom_callback_example_runs_as_a_script(mock_env):
    done = run_script(EXAMPLES / "custom_callbacks.py", mock_env)
    # A clean exit: no engine thread touches Python while the interpreter shuts down.
    assert done.returncode == 0, done.stderr
    assert "4 rows written to custom.jsonl" in done.stdout
    rows = read_rows(mock_env / "custom.jsonl")
    assert [r["metadata"]["context_ids"] for r in rows] == [
        ["faq-billing"], ["faq-login"], ["faq-billing"], ["faq-login"]
    ]
    for row in rows:
        check_dialog(row)
        assert row["response_context"] == row["instruction_context"]


class FixedQuestions(BaseInstructionGeneratorCallback):
    """A sync instruction callback: questions from a list, about one context."""

    def __init__(self):
        self.calls = 0
        self.prompts = []

    def generate(self, original_prompt):
        self.calls += 1
        self.prompts.append(original_prompt)
        return GeneratedInstructions(
            instructions=[f"How do I fix error {500 + self.calls}?"],
            context="Errors 5xx are server-side; retry later.",
            persona="an impatient night-shift operator",
            context_id="kb-errors",
        )


class AsyncQuestions(FixedQuestions):
    """The same, as an async callback."""

    async def agenerate(self, original_prompt):
        await asyncio.sleep(0)
        return self.generate(original_prompt)


class Stamp(BaseRespondentPromptModifierCallback):
    """A sync modifier: the context and the question go into the prompt."""

    def generate(self, respondent_prompt, context, instruction):
        return GeneratedResponsePrompt(
            prompt=f"{respondent_prompt}\n\nKnown: {context}",
            context=f"stamped: {context} / {instruction}",
            metadata={"stamped": True},
        )


class AsyncStamp(Stamp):
    """The same, as an async callback."""

    async def agenerate(self, respondent_prompt, context, instruction):
        await asyncio.sleep(0)
        return self.generate(respondent_prompt, context, instruction)


class AfterRows(BaseStoppingCallback):
    """Stops once `n` rows are stored, recording the states it saw."""

    def __init__(self, n):
        self.n = n
        self.seen = []

    def should_stop(self, state):
        self.seen.append(state.num_generated)
        return state.num_generated >= self.n


@pytest.mark.parametrize(
    "questions, modifier",
    [(FixedQuestions, AsyncStamp), (AsyncQuestions, Stamp)],
    ids=["sync-questions-async-modifier", "async-questions-sync-modifier"],
)
def test_python_callbacks_drive_the_engine(mock_env, questions, modifier):
    callback, stop = questions(), AfterRows(3)
    generator = ConversationGenerator(
        respondent_prompt="You are a support agent.",
        correspondent_prompt="You are a user with a broken server.",
        instruction_generator_callback=callback,
        respondent_prompt_modifier=modifier(),
        storage=JSONLStorage("rows.jsonl"),
    )
    report = asyncio.run(
        generator.generate(max_turns=2, max_concurrency=1, stopping_criteria=[stop])
    )
    rows = read_rows(mock_env / "rows.jsonl")
    # The Python stopping rule ended the run: one dialog at a time, so exactly 3.
    assert report.rows_written == 3 == len(rows)
    assert stop.seen[-1] == 3
    assert callback.prompts[0] == "You are a user with a broken server."
    for row in rows:
        check_dialog(row)
        assert row["conversations"][0]["content"].startswith("How do I fix error 5")
        assert row["instruction_context"] == "Errors 5xx are server-side; retry later."
        assert row["response_context"].startswith("stamped: Errors 5xx are server-side")
        assert row["persona"] == "an impatient night-shift operator"
        assert row["metadata"]["context_ids"] == ["kb-errors"]
        assert row["metadata"]["stamped"] is True


class Broken(BaseInstructionGeneratorCallback):
    async def agenerate(self, original_prompt):
        raise ValueError("the knowledge base is offline")


def test_a_raising_callback_surfaces_as_a_python_exception_naming_it(mock_env):
    generator = ConversationGenerator(
        respondent_prompt="You are a support agent.",
        correspondent_prompt="You are a user.",
        instruction_generator_callback=Broken(),
        storage=JSONLStorage("rows.jsonl"),
    )
    with pytest.raises(CallbackError) as raised:
        asyncio.run(generator.generate(num_dialogs=3))
    message = str(raised.value)
    assert "instruction_generator_callback Broken.agenerate" in message
    assert "ValueError: the knowledge base is offline" in message
    assert isinstance(raised.value.__cause__, ValueError)


class WrongShape(BaseInstructionGeneratorCallback):
    def generate(self, original_prompt):
        return ["a list is not GeneratedInstructions"]


def test_a_callback_returning_the_wrong_type_is_told_what_to_return(mock_env):
    generator = ConversationGenerator(
        respondent_prompt="You are a support agent.",
        correspondent_prompt="You are a user.",
        instruction_generator_callback=WrongShape(),
        storage=JSONLStorage("rows.jsonl"),
    )
    with pytest.raises(CallbackError, match="return GeneratedInstructions"):
        asyncio.run(generator.generate(num_dialogs=1))


def test_key_pool_openai_provider_and_built_in_stopping(mock_env, mock_url):
    generator = ConversationGenerator(
        respondent_prompt="You are a cooking assistant.",
        api_key=afterimage_rs.SmartKeyPool(["key-a", "key-b"]),
        model_name="mock-model",
        model_provider_name="openai",
        base_url=mock_url + "/v1",
        instruction_generator_callback=afterimage_rs.ContextualInstructionGeneratorCallback(
            documents=["Rice needs twice its volume of water.", "Eggs boil in 9 minutes."],
        ),
        respondent_prompt_modifier=afterimage_rs.WithRAGRespondentPromptModifier(
            documents=["Rice needs twice its volume of water.", "Eggs boil in 9 minutes."],
        ),
        storage=JSONLStorage("rows.jsonl"),
    )
    report = asyncio.run(
        generator.generate(
            max_turns=1,
            max_concurrency=3,
            stopping_criteria=[afterimage_rs.FixedNumberStoppingCallback(4)],
        )
    )
    rows = read_rows(mock_env / "rows.jsonl")
    assert report.rows_written == 4 == len(rows)
    assert report.output.endswith("rows.jsonl")
    for row in rows:
        check_dialog(row)
        assert row["response_context"]


def test_a_missing_key_is_a_value_error_naming_the_fix(mock_env, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    generator = ConversationGenerator(respondent_prompt="You help.")
    with pytest.raises(ValueError, match="pass api_key=... or set GEMINI_API_KEY"):
        asyncio.run(generator.generate(num_dialogs=1))


def test_the_afterimage_command_is_on_the_venvs_path(tmp_path):
    command = shutil.which("afterimage", path=str(Path(sys.executable).parent))
    assert command, "the wheel installed no `afterimage` script next to python"
    shown = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "Usage: afterimage" in shown.stdout
    wrong = subprocess.run([command, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert "frobnicate" in wrong.stderr


def test_the_afterimage_command_generates_a_dataset(mock_url, tmp_path):
    from conftest import REPO

    command = shutil.which("afterimage", path=str(Path(sys.executable).parent))
    out = tmp_path / "support.jsonl"
    done = subprocess.run(
        [
            command, "generate", "--config", str(REPO / "examples/support-bot.yaml"),
            "--provider", "local", "--model", "mock-model", "--base-url", mock_url + "/v1",
            "--num-dialogs", "3", "--out", str(out), "--json",
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_written"] == 3
    rows = read_rows(out)
    assert len(rows) == 3
    for row in rows:
        check_dialog(row)


def test_the_package_ships_its_types():
    package = Path(afterimage_rs.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "_native.pyi").is_file()


class CancelAfter(BaseStoppingCallback):
    """Never stops by itself: cancels the task awaiting `generate` after `n` rows."""

    def __init__(self, n, loop, task):
        self.n, self.loop, self.task = n, loop, task

    def should_stop(self, state):
        if state.num_generated >= self.n:
            self.loop.call_soon_threadsafe(self.task.cancel)
        return False


def test_cancelling_generate_stops_the_run_and_keeps_whole_rows(mock_env):
    generator = ConversationGenerator(
        respondent_prompt="You are a support agent.",
        correspondent_prompt="You are a user.",
        instruction_generator_callback=FixedQuestions(),
        storage=JSONLStorage("rows.jsonl"),
    )

    async def main():
        task = asyncio.current_task()
        stop = CancelAfter(2, asyncio.get_running_loop(), task)
        await generator.generate(
            num_dialogs=100_000, max_concurrency=2, stopping_criteria=[stop]
        )

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    rows = read_rows(mock_env / "rows.jsonl")
    # Stopped long before its count; the dialogs in flight were finished, not torn.
    assert 2 <= len(rows) < 1000
    for row in rows:
        check_dialog(row)
