//! One structured row, from instruction to stored record: draw the question and write
//! the prompt as a dialog does, ask for a JSON output with the schema as the response
//! format, ask again once with the problems when it does not match, store the row in
//! the Python library's shape.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{
    ChatRequest, Instruction, Message, ModifiedPrompt, Spent, Usage, parse_lenient,
};
use afterimage_strategies::validate_arguments;
use serde::Serialize;
use serde_json::Value;

use super::{Dialog, DialogFailure, DialogOutcome, Outcome, RunContext, Stored, dialog_seed};
use crate::DialogError;
use crate::structured::StructuredJob;

/// Runs row `index` of the run after `start_delay`; a row whose output fails the
/// schema twice fails with [`DialogError::InvalidOutput`], so the scheduler counts it
/// and starts another in its place.
pub(crate) async fn run_structured(
    run: Arc<RunContext>,
    job: Arc<StructuredJob>,
    index: u64,
    start_delay: Duration,
) -> Result<DialogOutcome, DialogFailure> {
    if !start_delay.is_zero() {
        tokio::time::sleep(start_delay).await;
    }
    let mut dialog = Dialog::new(&run, index, dialog_seed(run.seed, index));
    let stored = dialog.structured_steps(&job).await;
    dialog.finish(stored)
}

impl Dialog<'_> {
    /// Draw an instruction, write the system prompt, ask for a valid output, store.
    async fn structured_steps(&mut self, job: &StructuredJob) -> Result<Stored, DialogError> {
        let run = self.run;
        let instruction = self.draw_instruction().await?;
        let mut outcome = Outcome {
            run,
            instruction: &instruction,
            stored: false,
        };
        let prompt = self.respondent_prompt(&instruction).await?;
        let (output, attempts) = self.valid_output(job, &prompt, &instruction).await?;
        let stored = self
            .store_structured(job, &instruction, &prompt, output, attempts)
            .await?;
        outcome.stored = true;
        Ok(stored)
    }

    /// Asks for the output; an answer that is not JSON matching the schema is asked
    /// again once, with what was wrong (counted as `output_reasked`). Returns the
    /// output and the requests it took.
    async fn valid_output(
        &mut self,
        job: &StructuredJob,
        prompt: &ModifiedPrompt,
        instruction: &Instruction,
    ) -> Result<(Value, u32), DialogError> {
        let run = self.run;
        let mut messages = vec![
            Message::system(prompt.system_prompt.as_str()),
            Message::user(instruction.text.as_str()),
        ];
        for attempt in 1..=2 {
            let request = run
                .respondent_sampling
                .apply(ChatRequest::new(messages.clone()))
                .json_schema(job.schema.clone());
            let reply = run
                .respondent
                .chat(request)
                .await
                .map_err(DialogError::Respondent)?;
            self.spent += Spent::one(reply.usage);
            let problems = match output_problems(&reply.message.content, &job.schema.schema) {
                Ok(output) => return Ok((output, attempt)),
                Err(problems) => problems,
            };
            if attempt == 2 {
                return Err(DialogError::InvalidOutput {
                    attempts: attempt,
                    problems,
                });
            }
            self.counts.rejections.push("output_reasked");
            tracing::debug!(%problems, "an output did not match the schema; asking again");
            messages.push(Message::assistant(reply.message.content));
            messages.push(Message::user(reask_note(&problems)));
        }
        Err(DialogError::InvalidOutput {
            attempts: 2,
            problems: "no answer".to_owned(),
        })
    }

    /// Writes the row through [`Storage::write_record`](afterimage_core::Storage::write_record);
    /// a re-asked output counts as one regeneration.
    async fn store_structured(
        &self,
        job: &StructuredJob,
        instruction: &Instruction,
        prompt: &ModifiedPrompt,
        output: Value,
        attempts: u32,
    ) -> Result<Stored, DialogError> {
        let run = self.run;
        let source = &instruction.source;
        let persona = source.persona.as_ref();
        let context_ids = instruction.context_ids();
        let context = prompt
            .response_context
            .as_deref()
            .or((!source.context.is_empty()).then_some(source.context.as_str()));
        let id = super::row_id(&run.run_id, self.index);
        let row = StructuredRow {
            instruction: &instruction.text,
            context,
            persona: persona.map(|p| p.description.as_str()),
            output,
            metadata: StructuredMetadata {
                context_id: context_ids.first().map(String::as_str),
                context_ids: &context_ids,
                persona_name: persona.map(|p| p.description.as_str()),
                persona_generation_depth: persona.and_then(|p| p.generation_depth),
                generation: Generation {
                    run_id: &run.run_id,
                    index: self.index,
                    model: run.respondent.model_id(),
                    schema: &job.schema.name,
                    attempts,
                    requests: self.spent.requests,
                    usage: self.spent.usage,
                    finished_at_ms: super::unix_ms(),
                    elapsed_ms: self.started.elapsed().as_millis() as u64,
                    seed: self.seed,
                },
            },
            id: &id,
        };
        let record = serde_json::to_value(&row).map_err(|e| {
            DialogError::Storage(afterimage_core::StorageError::Backend(format!(
                "row {id} cannot be serialised: {e}"
            )))
        })?;
        let place = run.rows.reserve().ok_or(DialogError::Spare)?;
        run.storage
            .write_record(&record)
            .await
            .map_err(DialogError::Storage)?;
        place.keep();
        Ok(Stored {
            persona: persona.map(|p| p.description.clone()),
            context_ids,
            regenerations: attempts - 1,
        })
    }
}

/// The output in `content` when it is JSON matching `schema`, else what is wrong with
/// it, in one line.
fn output_problems(content: &str, schema: &Value) -> Result<Value, String> {
    if content.trim().is_empty() {
        return Err("the answer was empty".to_owned());
    }
    let value: Value = parse_lenient(content).map_err(|e| e.to_string())?;
    validate_arguments(schema, &value).map_err(|errors| errors.join("; "))?;
    Ok(value)
}

/// The user message asking again after an invalid answer.
fn reask_note(problems: &str) -> String {
    format!(
        "Your answer does not match the required JSON Schema: {problems}. Answer again with only the corrected JSON value, matching the schema exactly."
    )
}

/// A structured row, in the Python library's shape (`id` added). It reaches storage
/// as a JSON value, whose keys are sorted.
#[derive(Serialize)]
struct StructuredRow<'a> {
    instruction: &'a str,
    context: Option<&'a str>,
    persona: Option<&'a str>,
    output: Value,
    metadata: StructuredMetadata<'a>,
    id: &'a str,
}

#[derive(Serialize)]
struct StructuredMetadata<'a> {
    context_id: Option<&'a str>,
    context_ids: &'a [String],
    persona_name: Option<&'a str>,
    persona_generation_depth: Option<u32>,
    generation: Generation<'a>,
}

/// How the row was made.
#[derive(Serialize)]
struct Generation<'a> {
    run_id: &'a str,
    index: u64,
    model: &'a str,
    schema: &'a str,
    /// Requests for the output: 1, or 2 when it was asked again.
    attempts: u32,
    /// Every request of the row (instruction batches it refilled included).
    requests: u32,
    usage: Usage,
    finished_at_ms: u64,
    elapsed_ms: u64,
    seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_read_leniently_and_checked_against_the_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        });
        let ok = output_problems("```json\n{\"name\": \"Ada\", \"age\": 36}\n```", &schema);
        assert_eq!(ok.unwrap()["name"], "Ada");
        let wrong = output_problems("{\"name\": 5}", &schema).unwrap_err();
        assert!(wrong.contains("`/name`: expected string"), "{wrong}");
        assert!(wrong.contains("missing required property `age`"), "{wrong}");
        assert!(output_problems("I cannot do that.", &schema).is_err());
        assert!(output_problems("  ", &schema).is_err());
    }
}
