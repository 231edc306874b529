//! `StructuredGenerator`: one JSON output per instruction, checked against a JSON
//! Schema, in the Python library's structured row shape, with a dialog run's exact
//! counts, failure budget, ledger and resume.

use std::sync::Arc;
use std::time::Instant;

use afterimage_core::{
    ChatModel, ChatRequest, Instruction, InstructionGenerator, JsonSchema, Ledger, LedgerBook,
    Message, ModifiedPrompt, RespondentPromptModifier, RunStatus, Spent, Storage, Usage,
    parse_lenient, snippet, unix_ms,
};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{InstructionContext, check_instruction, validate_arguments};
use serde::Serialize;
use serde_json::Value;

use crate::dialog::{dialog_seed, row_id};
use crate::instructions::InstructionPool;
use crate::policy::Sampling;
use crate::pricing::{Accounted, Prices, RunLedger};
use crate::run::Plan;
use crate::schema::check_output_schema;
use crate::slots::{JobDone, JobFailed, JobResult, Session, open_record, run_jobs};
use crate::{DialogError, EngineError, GenerateOptions, RunReport};

/// Most generated questions a row discards (instruction checks) before it fails.
const MAX_REJECTED_DRAWS: usize = 10;

/// Generates one schema-valid JSON output per instruction and streams the rows
/// `{instruction, context, persona, output, metadata, id}` to a JSONL file.
///
/// Each row draws an instruction (from any [`InstructionGenerator`], with its
/// document and persona), lets the modifier write the system prompt, and asks the
/// model once with the schema as the request's response format, so servers with a
/// JSON schema mode constrain the answer. The answer is checked against the schema;
/// an invalid one is asked again once, with the problems found, and if that answer
/// fails too the row fails and another takes its place (within the run's failure
/// budget). [`generate`](Self::generate) takes the same [`GenerateOptions`] as a
/// dialog run: `num_dialogs` is the number of rows; turns do not apply.
///
/// ```no_run
/// use std::sync::Arc;
/// use afterimage_core::JsonSchema;
/// use afterimage_engine::{GenerateOptions, StructuredGenerator};
/// use afterimage_storage::JsonlStorage;
/// use afterimage_strategies::SimpleInstructionGenerator;
///
/// # async fn demo(model: Arc<dyn afterimage_core::ChatModel>) -> Result<(), Box<dyn std::error::Error>> {
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
///     "required": ["question", "answer"],
/// });
/// let generator = StructuredGenerator::builder()
///     .schema(JsonSchema::new("faq", schema))
///     .respondent_prompt("You write FAQ entries for a support site.")
///     .model(Arc::clone(&model))
///     .instruction_generator(Arc::new(SimpleInstructionGenerator::new(model)))
///     .output(Arc::new(JsonlStorage::new("faq.jsonl")))
///     .build()?;
/// let report = generator.generate(GenerateOptions::new().num_dialogs(50)).await?;
/// println!("{} rows, {} asked again", report.rows_written, report.regenerations);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StructuredGenerator {
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    schema: JsonSchema,
    respondent_prompt: String,
    correspondent_prompt: Option<String>,
    model: Arc<dyn ChatModel>,
    instructions: Arc<dyn InstructionGenerator>,
    modifier: Option<Arc<dyn RespondentPromptModifier>>,
    sampling: Sampling,
    output: Arc<JsonlStorage>,
    ledger: Ledger,
    instruction_checks: bool,
    accounted: Accounted,
}

/// Builds a [`StructuredGenerator`]: a schema, a respondent prompt, a model, an
/// instruction generator and an output are required.
#[derive(Debug, Default)]
pub struct StructuredGeneratorBuilder {
    schema: Option<JsonSchema>,
    respondent_prompt: Option<String>,
    correspondent_prompt: Option<String>,
    model: Option<Arc<dyn ChatModel>>,
    /// Whether `model` already records in `ledger` (handed over by a dialog generator).
    metered: bool,
    instructions: Option<Arc<dyn InstructionGenerator>>,
    modifier: Option<Arc<dyn RespondentPromptModifier>>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    output: Option<Arc<JsonlStorage>>,
    ledger: Option<Ledger>,
    instruction_checks: Option<bool>,
}

impl StructuredGeneratorBuilder {
    /// The JSON Schema every output must match (an object schema; see
    /// [`check_output_schema`](crate::check_output_schema) for what is checked).
    pub fn schema(mut self, schema: JsonSchema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The system prompt (what the outputs are for); the modifier may add context.
    pub fn respondent_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.respondent_prompt = Some(prompt.into());
        self
    }

    /// Who asks, as the instruction generator is told (default: the generator's own
    /// correspondent prompt, else none).
    pub fn correspondent_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.correspondent_prompt = Some(prompt.into());
        self
    }

    /// The model that writes the outputs.
    pub fn model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self.metered = false;
        self
    }

    /// A model that already records in the builder's ledger.
    pub(crate) fn metered_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self.metered = true;
        self
    }

    /// What each row is asked for.
    pub fn instruction_generator(mut self, generator: Arc<dyn InstructionGenerator>) -> Self {
        self.instructions = Some(generator);
        self
    }

    /// What the model is shown besides the instruction (the sampled documents, say).
    pub fn respondent_prompt_modifier(
        mut self,
        modifier: Arc<dyn RespondentPromptModifier>,
    ) -> Self {
        self.modifier = Some(modifier);
        self
    }

    /// Sampling temperature, 0 to 2 (default 0.7, upstream's).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Most tokens per output (default: the endpoint's).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The JSONL file rows go to (its run record beside it, as for dialogs).
    pub fn output(mut self, output: Arc<JsonlStorage>) -> Self {
        self.output = Some(output);
        self
    }

    /// The ledger the model records in (default: one of its own).
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Discard generated questions that are no request before a row is spent on them
    /// (default: on), as a dialog run does.
    pub fn instruction_checks(mut self, on: bool) -> Self {
        self.instruction_checks = Some(on);
        self
    }

    /// Checks the parts and builds the generator.
    pub fn build(self) -> Result<StructuredGenerator, EngineError> {
        let missing =
            |what: &str, how: &str| EngineError::Config(format!("{what} is missing: {how}"));
        let schema = self
            .schema
            .ok_or_else(|| missing("the output schema", "call .schema(...)"))?;
        check_output_schema(&schema.schema)
            .map_err(|e| EngineError::Config(format!("the output schema: {e}")))?;
        let respondent_prompt = self
            .respondent_prompt
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| missing("the respondent prompt", "call .respondent_prompt(...)"))?;
        let model = self
            .model
            .ok_or_else(|| missing("the model", "call .model(...)"))?;
        let instructions = self.instructions.ok_or_else(|| {
            missing(
                "the instruction generator",
                "call .instruction_generator(...)",
            )
        })?;
        let output = self
            .output
            .ok_or_else(|| missing("the output", "call .output(...)"))?;
        let temperature = self.temperature.unwrap_or(0.7);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(EngineError::Config(format!(
                "temperature is {temperature}: it must lie between 0 and 2"
            )));
        }
        let ledger = self.ledger.unwrap_or_default();
        let model = if self.metered {
            model
        } else {
            ledger.meter(model, "respondent")
        };
        Ok(StructuredGenerator {
            parts: Arc::new(Parts {
                schema,
                respondent_prompt,
                correspondent_prompt: self.correspondent_prompt,
                model,
                instructions,
                modifier: self.modifier,
                sampling: Sampling {
                    temperature,
                    max_tokens: self.max_tokens.filter(|n| *n > 0),
                },
                output,
                ledger,
                instruction_checks: self.instruction_checks.unwrap_or(true),
                accounted: Accounted::default(),
            }),
        })
    }
}

impl StructuredGenerator {
    /// Starts a builder.
    pub fn builder() -> StructuredGeneratorBuilder {
        StructuredGeneratorBuilder::default()
    }

    /// The ledger the model records in.
    pub fn ledger(&self) -> &Ledger {
        &self.parts.ledger
    }

    /// Writes rows until the options' count (or a stopping criterion, the failure
    /// budget, the stop handle) ends the run. With [`GenerateOptions::resume`], the
    /// run recorded next to the output is finished: same run id and seed, only the
    /// missing rows; without it, an output holding rows is refused.
    pub async fn generate(&self, options: GenerateOptions) -> Result<RunReport, EngineError> {
        let parts = &self.parts;
        let start = self.accounted();
        let mut plan = Plan::new(&options)?;
        let storage: &dyn Storage = parts.output.as_ref();
        let correspondent_prompt = self.correspondent_prompt().await?;
        let (mut record, done) =
            open_record(storage, &options, "structured", &correspondent_prompt).await?;
        if !done.is_empty() {
            plan.stored_visits = storage
                .context_visits()
                .await
                .map_err(|e| EngineError::Setup(format!("reading {}: {e}", storage.location())))?;
            parts.instructions.record_stored_visits(&plan.stored_visits);
        }
        plan.done = done;
        record.status = RunStatus::Running;
        record.rows_requested = plan.cap;
        record.rows_written = plan.done.len() as u64;
        record.updated_at_ms = unix_ms();
        // Saved before the first row, so a run killed at any point can be resumed.
        storage.save_run(&record).await.map_err(|e| {
            EngineError::Setup(format!(
                "saving the run record in {}: {e}",
                storage.location()
            ))
        })?;
        let ledger = RunLedger::new(
            parts.ledger.clone(),
            record.ledger.clone(),
            start,
            Prices::of(&options),
        );
        let run = Arc::new(RowRun {
            parts: Arc::clone(parts),
            run_id: record.run_id.clone(),
            seed: record.seed,
            correspondent_prompt: record.correspondent_prompt.clone(),
            pool: InstructionPool::new(Arc::clone(&parts.instructions), options.steering.clone()),
        });
        let session = Session {
            plan,
            options: &options,
            storage,
            ledger: &ledger,
            record: &mut record,
        };
        let result = run_jobs(session, |index| make_row(Arc::clone(&run), index)).await;
        record.ledger = ledger.run();
        crate::slots::close_record(storage, &mut record, &result).await;
        *parts.accounted.lock().unwrap_or_else(|e| e.into_inner()) = parts.ledger.book();
        result
    }

    fn accounted(&self) -> LedgerBook {
        self.parts
            .accounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The one given, else the instruction generator's own, else none (no request is
    /// spent on writing one: the output model never plays the user).
    async fn correspondent_prompt(&self) -> Result<String, EngineError> {
        let parts = &self.parts;
        if let Some(prompt) = &parts.correspondent_prompt {
            return Ok(prompt.clone());
        }
        let own = parts
            .instructions
            .correspondent_prompt(&parts.respondent_prompt)
            .await
            .map_err(|e| EngineError::Setup(format!("instruction generator: {e}")))?;
        Ok(own.unwrap_or_default())
    }
}

impl crate::ConversationGenerator {
    /// A [`StructuredGenerator`] builder holding this generator's respondent prompt,
    /// model (recording in the same ledger), sampling settings, instruction generator,
    /// modifier and correspondent prompt (when one was given): add a schema and an
    /// output and build.
    pub fn structured(&self) -> StructuredGeneratorBuilder {
        let parts = self.structured_parts();
        let mut builder = StructuredGenerator::builder()
            .respondent_prompt(parts.respondent_prompt)
            .ledger(parts.ledger)
            .metered_model(parts.respondent)
            .instruction_generator(parts.instructions)
            .temperature(parts.sampling.temperature)
            .instruction_checks(parts.instruction_checks);
        if let Some(n) = parts.sampling.max_tokens {
            builder = builder.max_tokens(n);
        }
        if let Some(modifier) = parts.modifier {
            builder = builder.respondent_prompt_modifier(modifier);
        }
        if let Some(prompt) = parts.correspondent_prompt {
            builder = builder.correspondent_prompt(prompt);
        }
        builder
    }
}

/// The parts of a [`crate::ConversationGenerator`] a structured run takes over.
pub(crate) struct FromDialogs {
    pub(crate) respondent_prompt: String,
    /// Already metered in `ledger`.
    pub(crate) respondent: Arc<dyn ChatModel>,
    pub(crate) ledger: Ledger,
    pub(crate) instructions: Arc<dyn InstructionGenerator>,
    pub(crate) modifier: Option<Arc<dyn RespondentPromptModifier>>,
    pub(crate) sampling: Sampling,
    pub(crate) instruction_checks: bool,
    pub(crate) correspondent_prompt: Option<String>,
}

/// What every row of a run shares.
#[derive(Debug)]
struct RowRun {
    parts: Arc<Parts>,
    run_id: String,
    seed: u64,
    correspondent_prompt: String,
    pool: InstructionPool,
}

/// One row on its way.
struct Row<'a> {
    run: &'a RowRun,
    index: u64,
    seed: u64,
    started: Instant,
    done: JobDone,
}

/// Makes row `index`: the steps of [`Row::steps`], with what they spent either way.
async fn make_row(run: Arc<RowRun>, index: u64) -> JobResult {
    let mut row = Row {
        run: &run,
        index,
        seed: dialog_seed(run.seed, index),
        started: Instant::now(),
        done: JobDone::default(),
    };
    match row.steps().await {
        Ok(()) => Ok(row.done),
        Err(error) => Err(Box::new(JobFailed {
            error,
            so_far: row.done,
        })),
    }
}

/// Tells the instruction generator how the row made from an instruction ended, also
/// when the task is dropped.
struct Outcome<'a> {
    pool: &'a InstructionPool,
    instruction: &'a Instruction,
    stored: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.pool.done(self.instruction, self.stored);
    }
}

impl Row<'_> {
    /// Draw an instruction, write the system prompt, ask for a valid output, store.
    async fn steps(&mut self) -> Result<(), DialogError> {
        let run = self.run;
        let instruction = self.draw_instruction().await?;
        let mut outcome = Outcome {
            pool: &run.pool,
            instruction: &instruction,
            stored: false,
        };
        let prompt = match &run.parts.modifier {
            Some(modifier) => modifier
                .modify(&run.parts.respondent_prompt, &instruction)
                .await
                .map_err(DialogError::Modifier)?,
            None => ModifiedPrompt {
                system_prompt: run.parts.respondent_prompt.clone(),
                ..ModifiedPrompt::default()
            },
        };
        let (output, requests) = self.valid_output(&prompt, &instruction).await?;
        self.store(&instruction, &prompt, output, requests)?;
        outcome.stored = true;
        Ok(())
    }

    /// The next instruction that passes the instruction checks (when on).
    async fn draw_instruction(&mut self) -> Result<Instruction, DialogError> {
        let run = self.run;
        loop {
            let draws = self.done.instructions_rejected.len() as u64;
            let (instruction, refill) = run
                .pool
                .next(&run.correspondent_prompt, self.seed.wrapping_add(draws))
                .await
                .map_err(DialogError::Instruction)?;
            self.done.spent += refill;
            let Err(rejection) = self.check(&instruction) else {
                return Ok(instruction);
            };
            run.pool.done(&instruction, false);
            self.done.instructions_rejected.push(rejection.cause);
            if self.done.instructions_rejected.len() >= MAX_REJECTED_DRAWS {
                return Err(DialogError::JunkInstructions {
                    rejected: MAX_REJECTED_DRAWS as u32,
                    last: snippet(instruction.text.trim(), 60),
                    why: rejection.to_string(),
                    none_passed: false,
                });
            }
        }
    }

    fn check(
        &self,
        instruction: &Instruction,
    ) -> Result<(), afterimage_strategies::InstructionRejection> {
        let run = self.run;
        if !run.parts.instruction_checks {
            return Ok(());
        }
        let mut context = InstructionContext::new().prompt(&run.correspondent_prompt);
        if let Some(template) = run.pool.prompt_template() {
            context = context.prompt(template);
        }
        for document in &instruction.source.documents {
            context = context.document(&document.text);
        }
        check_instruction(&instruction.text, &context)
    }

    /// Asks for the output; an answer that is not JSON matching the schema is asked
    /// again once, with what was wrong. Returns the output and the requests made.
    async fn valid_output(
        &mut self,
        prompt: &ModifiedPrompt,
        instruction: &Instruction,
    ) -> Result<(Value, u32), DialogError> {
        let parts = &self.run.parts;
        let mut messages = vec![
            Message::system(prompt.system_prompt.as_str()),
            Message::user(instruction.text.as_str()),
        ];
        for attempt in 1..=2 {
            let request = parts
                .sampling
                .apply(ChatRequest::new(messages.clone()))
                .json_schema(parts.schema.clone());
            let reply = parts
                .model
                .chat(request)
                .await
                .map_err(DialogError::Respondent)?;
            self.done.spent += Spent::one(reply.usage);
            let problems = match output_problems(&reply.message.content, &parts.schema.schema) {
                Ok(output) => return Ok((output, attempt)),
                Err(problems) => problems,
            };
            if attempt == 2 {
                return Err(DialogError::InvalidOutput {
                    attempts: attempt,
                    problems,
                });
            }
            self.done.rejections.push("output_reasked");
            tracing::debug!(%problems, "an output did not match the schema; asking again");
            messages.push(Message::assistant(reply.message.content));
            messages.push(Message::user(reask_note(&problems)));
        }
        Err(DialogError::InvalidOutput {
            attempts: 2,
            problems: "no answer".to_owned(),
        })
    }

    /// Writes the row, and notes its documents and persona for the run's counts.
    fn store(
        &mut self,
        instruction: &Instruction,
        prompt: &ModifiedPrompt,
        output: Value,
        requests: u32,
    ) -> Result<(), DialogError> {
        let run = self.run;
        let source = &instruction.source;
        let persona = source.persona.as_ref();
        let context_ids = instruction.context_ids();
        let context = prompt
            .response_context
            .as_deref()
            .or((!source.context.is_empty()).then_some(source.context.as_str()));
        let id = row_id(&run.run_id, self.index);
        let row = StructuredRow {
            instruction: &instruction.text,
            context,
            persona: persona.map(|p| p.description.as_str()),
            output,
            metadata: RowMetadata {
                context_id: context_ids.first().map(String::as_str),
                context_ids: &context_ids,
                persona_name: persona.map(|p| p.description.as_str()),
                persona_generation_depth: persona.and_then(|p| p.generation_depth),
                generation: Generation {
                    run_id: &run.run_id,
                    index: self.index,
                    model: run.parts.model.model_id(),
                    schema: &run.parts.schema.name,
                    attempts: requests,
                    requests: self.done.spent.requests,
                    usage: self.done.spent.usage,
                    finished_at_ms: unix_ms(),
                    elapsed_ms: self.started.elapsed().as_millis() as u64,
                    seed: self.seed,
                },
            },
            id: &id,
        };
        run.parts
            .output
            .write_serialized(&id, &row)
            .map_err(DialogError::Storage)?;
        self.done.persona = persona.map(|p| p.description.clone());
        self.done.context_ids = context_ids;
        Ok(())
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

/// A structured row, in the Python library's shape (`id` added).
#[derive(Serialize)]
struct StructuredRow<'a> {
    instruction: &'a str,
    context: Option<&'a str>,
    persona: Option<&'a str>,
    output: Value,
    metadata: RowMetadata<'a>,
    id: &'a str,
}

#[derive(Serialize)]
struct RowMetadata<'a> {
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
