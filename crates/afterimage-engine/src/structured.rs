//! `StructuredGenerator`: one JSON output per instruction, checked against a JSON
//! Schema, in the Python library's structured row shape. A structured run is a dialog
//! run with another job in each slot (`crate::run`): the same exact count, failure
//! budget, stop handle and grace deadline, metrics, ledger, run record and resume; the
//! one row is `crate::dialog::structured`.

use std::sync::Arc;

use afterimage_core::{
    ChatModel, InstructionGenerator, JsonSchema, Ledger, RespondentPromptModifier, Storage,
};

use crate::policy::Sampling;
use crate::run::Job;
use crate::schema::check_output_schema;
use crate::{ConversationGenerator, EngineError, GenerateOptions, RunReport, Turns};

/// Generates one schema-valid JSON output per instruction and streams the rows
/// `{instruction, context, persona, output, metadata, id}` to storage (JSON Lines,
/// SQLite or PostgreSQL, through [`Storage::write_record`]).
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
    /// The dialog generator whose scheduler runs the rows (its storage, ledger,
    /// instruction generator and modifier are the rows').
    conversation: ConversationGenerator,
    job: Arc<StructuredJob>,
}

/// What every row of a generator shares besides the run.
#[derive(Debug)]
pub(crate) struct StructuredJob {
    /// The schema every output must match, sent as the request's response format.
    pub(crate) schema: JsonSchema,
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
    output: Option<Arc<dyn Storage>>,
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

    /// Where rows go: any storage that keeps records
    /// ([`Storage::write_record`]): a JSONL file (its run record beside it), SQLite
    /// or PostgreSQL, as for dialogs.
    pub fn output(mut self, output: Arc<dyn Storage>) -> Self {
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
        let parts = FromDialogs {
            respondent_prompt,
            respondent: model,
            ledger,
            instructions,
            modifier: self.modifier,
            sampling: Sampling {
                temperature,
                max_tokens: self.max_tokens.filter(|n| *n > 0),
            },
            instruction_checks: self.instruction_checks.unwrap_or(true),
            correspondent_prompt: self.correspondent_prompt,
        };
        Ok(StructuredGenerator {
            conversation: ConversationGenerator::for_structured(parts, output),
            job: Arc::new(StructuredJob { schema }),
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
        self.conversation.ledger()
    }

    /// Writes rows until the options' count (or a stopping criterion, the failure
    /// budget, the stop handle) ends the run. With [`GenerateOptions::resume`], the
    /// run recorded in the output is finished: same run id and seed, only the missing
    /// rows; without it, an output holding rows is refused, and so is an output
    /// holding another generator's run (dialogs) even with it.
    pub async fn generate(&self, mut options: GenerateOptions) -> Result<RunReport, EngineError> {
        // Turns do not apply to a row; one turn keeps the slots in index order.
        options.turns = Turns::Exactly(1);
        let job = Arc::clone(&self.job);
        let slot: Job = Arc::new(move |run, index, delay| {
            Box::pin(crate::dialog::run_structured(
                run,
                Arc::clone(&job),
                index,
                delay,
            ))
        });
        self.conversation
            .run_jobs(options, Some(slot), Some("structured"))
            .await
    }
}

impl ConversationGenerator {
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

/// What a structured run is made of: the parts a [`ConversationGenerator`] hands over
/// (`structured()`), or a builder's, from which `ConversationGenerator::for_structured`
/// makes the generator whose scheduler runs the rows.
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
