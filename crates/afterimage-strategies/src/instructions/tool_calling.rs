//! First requests that need tools: the instruction generator for function-calling
//! dialogs.

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, Document, DocumentSource, GeneratedInstructions, Instruction, InstructionGenerator,
    InstructionRequest, PersonaSource, StrategyError, ToolSpec, Usage,
};
use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index;

use super::ask::ask_for_instructions;
use super::persona::pick_persona;
use super::prompts::{DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT, instruction_user_message};
use super::steering::{steered_context, steered_metadata, steered_temperature, steering_note};
use crate::documents::{DocumentPool, Reservation};
use crate::template::fill;

/// Samples a few of the tools and asks the model for first requests a real user would
/// send that need them, with concrete argument values and without naming the tools.
///
/// Each call picks [`num_tools_to_sample`](Self::num_tools_to_sample) tools with the
/// request's seed and records their names in the batch's `metadata["tools"]`. With
/// [`documents`](Self::documents), one sampled document is the requests' context; with
/// [`personas`](Self::personas) as well, a persona for that document asks.
pub struct ToolCallingInstructionGenerator {
    model: Arc<dyn ChatModel>,
    tools: Vec<ToolSpec>,
    documents: Option<DocumentPool>,
    personas: Option<Arc<dyn PersonaSource>>,
    num_tools_to_sample: usize,
    n_instructions: usize,
    temperature: f32,
    system_prompt: String,
}

impl ToolCallingInstructionGenerator {
    /// A generator asking `model` for 3 requests per call, each batch about 2 of
    /// `tools`, at temperature 0.7.
    pub fn new(model: Arc<dyn ChatModel>, tools: Vec<ToolSpec>) -> Self {
        ToolCallingInstructionGenerator {
            model,
            tools,
            documents: None,
            personas: None,
            num_tools_to_sample: 2,
            n_instructions: 3,
            temperature: 0.7,
            system_prompt: DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT.to_owned(),
        }
    }

    /// Documents giving each batch a context (one document per call).
    pub fn documents(mut self, source: Arc<dyn DocumentSource>) -> Self {
        self.documents = Some(DocumentPool::new(source));
        self
    }

    /// Uses each document at most this many times (needs
    /// [`documents`](Self::documents)); see [`DocumentSampler::target_visits`](crate::DocumentSampler::target_visits).
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.documents = self.documents.map(|pool| pool.target_visits(target));
        self
    }

    /// Sampling weights by document id (needs [`documents`](Self::documents)); see
    /// [`DocumentSampler::weights`](crate::DocumentSampler::weights).
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.documents = self.documents.map(|pool| pool.weights(weights));
        self
    }

    /// Personas asking in their own voice (needs [`documents`](Self::documents)).
    pub fn personas(mut self, personas: Arc<dyn PersonaSource>) -> Self {
        self.personas = Some(personas);
        self
    }

    /// Tools shown per call (default 2; at least 1; all of them when there are fewer).
    pub fn num_tools_to_sample(mut self, n: usize) -> Self {
        self.num_tools_to_sample = n;
        self
    }

    /// Requests per call (default 3; at least 1).
    pub fn n_instructions(mut self, n: usize) -> Self {
        self.n_instructions = n;
        self
    }

    /// Sampling temperature (default 0.7).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Replaces the system prompt; `{n_instructions}` in it becomes the count.
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.system_prompt = template.into();
        self
    }

    /// `k` distinct tools, in their given order, chosen with `seed`.
    fn sample_tools(&self, seed: u64) -> Vec<ToolSpec> {
        let k = self.num_tools_to_sample.min(self.tools.len());
        let mut picked =
            index::sample(&mut StdRng::seed_from_u64(seed), self.tools.len(), k).into_vec();
        picked.sort_unstable();
        picked.into_iter().map(|i| self.tools[i].clone()).collect()
    }

    /// One document for this call, when there are documents.
    async fn document(
        &self,
        request: &InstructionRequest,
    ) -> Result<Option<Reservation<'_>>, StrategyError> {
        let Some(pool) = &self.documents else {
            return Ok(None);
        };
        Ok(Some(
            pool.take(1, request, self.n_instructions as u64).await?,
        ))
    }

    fn check(&self) -> Result<(), StrategyError> {
        let config = |message: &str| Err(StrategyError::Config(message.to_owned()));
        if self.tools.is_empty() {
            return config("the tool-calling instruction generator needs at least one tool");
        }
        if self.n_instructions == 0 {
            return config("n_instructions must be at least 1");
        }
        if self.num_tools_to_sample == 0 {
            return config("num_tools_to_sample must be at least 1");
        }
        if self.personas.is_some() && self.documents.is_none() {
            return config(
                "personas are drawn from documents: give the tool-calling generator documents too",
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for ToolCallingInstructionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("ToolCallingInstructionGenerator")
            .field("model", &self.model.model_id())
            .field("tools", &names)
            .field("documents", &self.documents)
            .field("personas", &self.personas.is_some())
            .field("num_tools_to_sample", &self.num_tools_to_sample)
            .field("n_instructions", &self.n_instructions)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

/// The tools as the instruction prompt shows them: name, description, parameters.
fn tools_section(tools: &[ToolSpec]) -> String {
    let lines: Vec<String> = tools
        .iter()
        .map(|t| {
            format!(
                "- {}: {}\n  parameters: {}",
                t.name,
                t.description.trim(),
                t.parameters
            )
        })
        .collect();
    format!("# Tools\n{}", lines.join("\n"))
}

#[async_trait]
impl InstructionGenerator for ToolCallingInstructionGenerator {
    fn prompt_template(&self) -> Option<&str> {
        Some(&self.system_prompt)
    }

    fn instruction_done(&self, instruction: &Instruction, stored: bool) {
        if let Some(pool) = &self.documents {
            pool.finish(&instruction.context_ids(), stored);
        }
    }

    fn record_stored_visits(&self, visits: &HashMap<String, u64>) {
        if let Some(pool) = &self.documents {
            pool.record_stored(visits);
        }
    }

    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        self.check()?;
        let tools = self.sample_tools(request.seed);
        let reserved = self.document(request).await?;
        let mut usage = Usage::default();
        let mut requests = 0;
        let documents: &[Document] = reserved.as_ref().map_or(&[], |r| r.documents());
        let persona = match &self.personas {
            Some(personas) => {
                let picked = pick_persona(personas.as_ref(), documents, request.seed).await?;
                usage += picked.usage;
                requests += picked.requests;
                Some(picked.persona)
            }
            None => None,
        };
        let who = persona
            .as_ref()
            .map_or(request.correspondent_prompt.as_str(), |p| {
                p.description.as_str()
            });
        let steering = request.steering.as_ref();
        let context = steered_context(documents, steering, request.seed);
        let mut user = format!(
            "{}\n\n{}",
            instruction_user_message(who, (!documents.is_empty()).then_some(context.as_str())),
            tools_section(&tools)
        );
        if let Some(steering) = steering {
            let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
            user.push_str(&steering_note(
                steering,
                &steering.avoid(&ids, request.seed),
            ));
        }
        let n = self.n_instructions;
        let asked = ask_for_instructions(
            self.model.as_ref(),
            fill(&self.system_prompt, &[("n_instructions", &n.to_string())]),
            user,
            steered_temperature(steering, self.temperature),
            n,
        )
        .await?;
        usage += asked.usage;
        requests += asked.requests;
        let documents = reserved.map_or_else(Vec::new, |r| r.confirm(asked.instructions.len()));
        let mut metadata = steered_metadata(steering);
        let names: Vec<serde_json::Value> = tools.iter().map(|t| t.name.clone().into()).collect();
        metadata.insert("tools".to_owned(), names.into());
        Ok(GeneratedInstructions {
            instructions: asked.instructions,
            documents,
            context,
            persona,
            metadata,
            usage,
            requests,
        })
    }
}
