"""Custom callbacks written in Python, upstream-style: an async instruction generator,
a sync respondent prompt modifier and a stopping rule. Run against any Gemini-format
server (GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL); prints the rows written."""

import asyncio
import sys

from afterimage_rs import (
    BaseInstructionGeneratorCallback,
    BaseRespondentPromptModifierCallback,
    BaseStoppingCallback,
    ConversationGenerator,
    GeneratedInstructions,
    GeneratedResponsePrompt,
    JSONLStorage,
)

FAQ = {
    "billing": "Invoices are sent on the 1st; refunds take 5 business days.",
    "login": "Accounts lock after 5 failed logins; unlock by email link.",
}


class FaqQuestions(BaseInstructionGeneratorCallback):
    """Asks about one FAQ entry per batch, in turn."""

    def __init__(self):
        self.turn = 0

    async def agenerate(self, original_prompt):
        topic = sorted(FAQ)[self.turn % len(FAQ)]
        self.turn += 1
        await asyncio.sleep(0)  # a real one would call a service here
        return GeneratedInstructions(
            instructions=[f"I have a question about {topic}, can you help?"],
            context=FAQ[topic],
            context_id=f"faq-{topic}",
        )


class WithFaq(BaseRespondentPromptModifierCallback):
    """Shows the assistant the FAQ entry the question is about."""

    def generate(self, respondent_prompt, context, instruction):
        return GeneratedResponsePrompt(
            prompt=f"{respondent_prompt}\n\nFAQ entry:\n{context}", context=context
        )


class EnoughTokens(BaseStoppingCallback):
    """Stops after `rows` rows or `tokens` tokens, whichever comes first."""

    def __init__(self, rows, tokens):
        self.rows, self.tokens = rows, tokens

    def should_stop(self, state):
        return state.num_generated >= self.rows or state.total_tokens >= self.tokens


async def main(path):
    generator = ConversationGenerator(
        respondent_prompt="You are a customer support agent.",
        correspondent_prompt="You are a customer of an online shop.",
        instruction_generator_callback=FaqQuestions(),
        respondent_prompt_modifier=WithFaq(),
        storage=JSONLStorage(path),
    )
    report = await generator.generate(
        max_turns=2, max_concurrency=1, stopping_criteria=[EnoughTokens(4, 10**9)]
    )
    print(f"{report.rows_written} rows written to {report.output}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "custom.jsonl"))
