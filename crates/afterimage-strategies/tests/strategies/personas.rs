//! Personas against a scripted model: lazy layers, failures, the sampling policy,
//! persistence, and questions in a persona's voice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatRequest, ChatResponse, ConversationRow, Document, InstructionGenerator, InstructionRequest,
    PersonaDocument, PersonaSource, ProviderError, Storage, StorageError, Usage,
};
use afterimage_strategies::{
    DEFAULT_PERSONA_FROM_PERSONA_PROMPT, DEFAULT_PERSONA_FROM_TEXT_PROMPT,
    InMemoryDocumentProvider, PersonaGenerator, PersonaInstructionGenerator,
};
use serde_json::json;

/// A storage keeping saved documents as JSON lines in memory (the last line of an
/// id wins), shared by handles as a file is by processes.
#[derive(Debug, Clone, Default)]
struct MemoryStore(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl Storage for MemoryStore {
    async fn write(&self, _row: &ConversationRow) -> Result<(), StorageError> {
        Ok(())
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        let mut lines = self.0.lock().unwrap();
        for document in documents {
            lines.push(serde_json::to_string(document).unwrap());
        }
        Ok(())
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        let mut out: Vec<PersonaDocument> = Vec::new();
        for line in self.0.lock().unwrap().iter() {
            let document: PersonaDocument = serde_json::from_str(line).unwrap();
            out.retain(|d| d.id != document.id);
            out.push(document);
        }
        Ok(out)
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

/// Who a persona request is about: the document text (layer 0) or the parent persona.
fn subject(request: &ChatRequest) -> (bool, String) {
    let system = request.system_text().unwrap_or_default();
    let user = &request.messages[1].content;
    if system == DEFAULT_PERSONA_FROM_TEXT_PROMPT {
        let text = user
            .trim_start_matches("<document>\n")
            .trim_end_matches("\n</document>");
        (true, text.to_owned())
    } else {
        assert_eq!(system, DEFAULT_PERSONA_FROM_PERSONA_PROMPT);
        let parent = user
            .trim_start_matches("# Person\n")
            .split("\n\n# Subject")
            .next()
            .unwrap();
        (false, parent.to_owned())
    }
}

fn five(of: &str) -> String {
    let personas: Vec<String> = (0..5).map(|i| format!("{of}/{i}")).collect();
    json!({ "personas": personas }).to_string()
}

/// A model naming personas after their subject (`doc/3`, `doc/3/1`, ...); `special`
/// may answer differently for a subject.
fn model_with(
    special: impl Fn(&str) -> Option<Result<String, ProviderError>> + Send + Sync + 'static,
) -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("scripted", move |request| {
        let (_, of) = subject(&request);
        let answer = special(&of).unwrap_or_else(|| Ok(five(&of)));
        async move { answer.map(|text| ChatResponse::text(text).with_usage(Usage::new(10, 5))) }
    }))
}

fn model() -> Arc<ScriptedModel> {
    model_with(|_| None)
}

fn server_error() -> ProviderError {
    ProviderError::Server {
        status: 500,
        message: "boom".into(),
    }
}

fn doc(text: &str) -> Document {
    Document::with_id(format!("id-{text}"), text)
}

async fn pick(generator: &PersonaGenerator, document: &Document, seed: u64) -> (String, u32) {
    let persona = generator
        .persona_for(document, seed)
        .await
        .unwrap()
        .persona
        .unwrap();
    (persona.description, persona.generation_depth.unwrap())
}

#[tokio::test]
async fn layers_are_generated_only_when_the_target_needs_them() {
    let model = model();
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(20));
    assert_eq!(generator.planned_depth(), 1);
    let d = doc("d");
    // The first pick pays for layer 0 (one call); the next four use it.
    let first = generator.persona_for(&d, 1).await.unwrap();
    assert_eq!(first.requests, 1);
    assert_eq!(first.usage, Usage::new(10, 5));
    assert_eq!(
        first.persona.unwrap().generation_depth,
        Some(0),
        "shallowest first"
    );
    for i in 1..5 {
        assert_eq!(pick(&generator, &d, i).await, (format!("d/{i}"), 0));
    }
    assert_eq!(model.calls(), 1);
    // The sixth needs more: layer 1 is five calls, one per parent.
    let sixth = generator.persona_for(&d, 6).await.unwrap();
    assert_eq!(sixth.requests, 5);
    assert_eq!(sixth.persona.unwrap().description, "d/0/0");
    assert_eq!(model.calls(), 6);
    // 30 personas now, target 20: the first 20 are cycled and layer 2 never comes.
    let mut seen = Vec::new();
    for i in 6..60 {
        seen.push(pick(&generator, &d, i).await);
    }
    assert_eq!(model.calls(), 6);
    assert_eq!(seen[13], ("d/2/4".to_owned(), 1), "the 20th pick");
    assert_eq!(seen[14], ("d/0".to_owned(), 0), "the 21st starts over");
    let personas = generator.personas(&d).await.unwrap();
    let sizes: Vec<usize> = personas
        .personas
        .iter()
        .map(|l| l.descriptions.len())
        .collect();
    assert_eq!(sizes, [5, 25]);
    let uses = generator.persona_uses("id-d").await;
    assert_eq!(uses.len(), 30);
    assert_eq!(uses.iter().map(|(_, n)| n).sum::<u64>(), 60);
    assert_eq!(uses[25].1, 0, "pruned personas are never picked");
}

#[tokio::test]
async fn a_small_target_or_none_stays_at_layer_zero() {
    let model = model();
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(3));
    let d = doc("d");
    let mut picks = Vec::new();
    for i in 0..7 {
        picks.push(pick(&generator, &d, i).await.0);
    }
    assert_eq!(picks, ["d/0", "d/1", "d/2", "d/0", "d/1", "d/2", "d/0"]);
    assert_eq!(model.calls(), 1);

    let model = self::model();
    let generator = PersonaGenerator::new(model.clone());
    let mut picks = Vec::new();
    for i in 0..7 {
        picks.push(pick(&generator, &d, i).await.0);
    }
    assert_eq!(picks, ["d/0", "d/1", "d/2", "d/3", "d/4", "d/0", "d/1"]);
    assert_eq!(model.calls(), 1);
}

#[tokio::test]
async fn eager_generation_goes_as_deep_as_the_target_and_counts_calls() {
    let model = model();
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(100));
    let report = generator.generate_all(&[doc("a"), doc("b")], 2).await;
    // Depth 2 for each: 1 + 5 + 25 calls, 5 + 25 + 125 personas.
    assert_eq!(model.calls(), 62);
    assert_eq!(report.requests, 62);
    assert_eq!(report.personas, 310);
    assert_eq!(report.with_personas, 2);
    assert!(report.failures.is_empty() && report.fatal.is_none());
    assert_eq!(report.usage, Usage::new(620, 310));
    // Picks after that cost nothing.
    assert_eq!(
        generator.persona_for(&doc("a"), 0).await.unwrap().requests,
        0
    );
    assert_eq!(model.calls(), 62);
}

#[tokio::test]
async fn one_failing_document_loses_only_its_own_personas() {
    let model = model_with(|of| (of == "bad").then(|| Err(server_error())));
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(20));
    let report = generator
        .generate_all(&[doc("a"), doc("bad"), doc("c")], 3)
        .await;
    assert_eq!(report.with_personas, 2);
    assert_eq!(report.personas, 60);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].document_id, "id-bad");
    assert_eq!(report.failures[0].depth, 0);
    assert!(report.failures[0].message.contains("boom"));
    assert!(report.fatal.is_none());
    // 6 + 6 calls for the good ones, and the bad one tried twice.
    assert_eq!(model.calls(), 14);
    // The failing document gives no persona, and is not asked about again.
    let none = generator.persona_for(&doc("bad"), 1).await.unwrap();
    assert!(none.persona.is_none());
    assert_eq!(model.calls(), 14);
    assert!(
        generator
            .personas(&doc("bad"))
            .await
            .unwrap()
            .personas
            .is_empty()
    );
    assert_eq!(pick(&generator, &doc("a"), 1).await, ("a/0".to_owned(), 0));
}

#[tokio::test]
async fn a_failing_parent_loses_only_its_children() {
    let model = model_with(|of| (of == "d/2").then(|| Err(server_error())));
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(20));
    let report = generator.generate_all(&[doc("d")], 1).await;
    assert_eq!(report.personas, 25);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].depth, 1);
    assert_eq!(model.calls(), 7, "one call, five parents, one retry");
    let layers = generator.personas(&doc("d")).await.unwrap().personas;
    assert_eq!(layers[1].descriptions.len(), 20);
    assert!(
        layers[1]
            .descriptions
            .iter()
            .all(|p| !p.starts_with("d/2/"))
    );
}

#[tokio::test]
async fn personas_repeated_across_layers_are_kept_once() {
    // Parent d/1 proposes two of layer 0's personas again (in other spellings).
    let model = model_with(|of| {
        (of == "d/1").then(|| {
            Ok(json!({"personas": ["D/0.", "d/1/0", "  d/3 ", "d/1/3", "d/1/4"]}).to_string())
        })
    });
    let generator = PersonaGenerator::new(model.clone()).target_per_document(Some(20));
    generator.generate_all(&[doc("d")], 1).await;
    let layers = generator.personas(&doc("d")).await.unwrap().personas;
    assert_eq!(layers[0].descriptions.len(), 5);
    assert_eq!(layers[1].descriptions.len(), 23);
    assert!(layers[1].descriptions.contains(&"d/1/0".to_owned()));
    assert!(
        !layers[1]
            .descriptions
            .iter()
            .any(|p| p.contains("d/0") && !p.contains("d/0/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_picks_share_one_generation() {
    let model = Arc::new(ScriptedModel::new("slow", |request| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (_, of) = subject(&request);
        Ok(ChatResponse::text(five(&of)))
    }));
    let generator = Arc::new(PersonaGenerator::new(model.clone()));
    let mut tasks = Vec::new();
    for seed in 0..8 {
        let generator = Arc::clone(&generator);
        tasks.push(tokio::spawn(async move {
            generator.persona_for(&doc("d"), seed).await.unwrap()
        }));
    }
    let mut requests = 0;
    let mut names = Vec::new();
    for task in tasks {
        let pick = task.await.unwrap();
        requests += pick.requests;
        names.push(pick.persona.unwrap().description);
    }
    assert_eq!(model.calls(), 1);
    assert_eq!(requests, 1, "one caller paid; the others waited");
    names.sort();
    assert_eq!(
        names,
        ["d/0", "d/0", "d/1", "d/1", "d/2", "d/2", "d/3", "d/4"]
    );
}

#[tokio::test]
async fn a_fatal_error_is_an_error_and_is_retried_later() {
    let model = Arc::new(ScriptedModel::new("bad key", |_| async {
        Err(ProviderError::Auth {
            status: 401,
            message: "invalid key".into(),
        })
    }));
    let generator = PersonaGenerator::new(model.clone());
    let err = generator.persona_for(&doc("d"), 0).await.unwrap_err();
    assert!(err.as_provider().unwrap().is_fatal(), "{err}");
    assert_eq!(model.calls(), 1, "a fatal error is not retried");
    assert!(generator.persona_for(&doc("d"), 0).await.is_err());
    assert_eq!(model.calls(), 2);
    let report = generator.generate_all(&[doc("x"), doc("y")], 1).await;
    assert!(report.fatal.unwrap().is_auth());
    assert_eq!(
        model.calls(),
        3,
        "documents after a fatal error are not started"
    );
}

#[tokio::test]
async fn an_unusable_answer_gets_one_more_chance() {
    let model = Arc::new(ScriptedModel::new("sloppy", |request| async move {
        let answer = if request.messages.len() == 2 {
            "I would suggest some personas!".to_owned()
        } else {
            assert!(request.messages[3].content.contains("\"personas\""));
            "Persona 1: A ward nurse.\nPersona 2: A porter with a phone 555-123-4567.\nPersona 3: A ward nurse"
                .to_owned()
        };
        Ok(ChatResponse::text(answer))
    }));
    let generator = PersonaGenerator::new(model.clone());
    let personas = generator.personas(&doc("d")).await.unwrap();
    assert_eq!(model.calls(), 2);
    assert_eq!(personas.personas[0].descriptions, ["A ward nurse."]);
    let request = &model.requests()[0];
    assert_eq!(request.response_schema.as_ref().unwrap().name, "personas");
}

#[tokio::test]
async fn reuse_beyond_the_supply_favours_shallow_layers() {
    // max depth 1 and a target of 40: 30 personas, so after one round each, picks are
    // weighted 2/5 per depth-0 persona and 1/25 per depth-1 persona (shares 2/3, 1/3).
    let model = model();
    let generator = PersonaGenerator::new(model.clone())
        .max_depth(1)
        .target_per_document(Some(40));
    let d = doc("d");
    let mut depths = Vec::new();
    for seed in 0..3030u64 {
        depths.push(pick(&generator, &d, seed * 7919).await.1);
    }
    assert_eq!(model.calls(), 6);
    let first_round: Vec<u32> = depths[..30].to_vec();
    assert_eq!(first_round, [vec![0; 5], vec![1; 25]].concat());
    let shallow = depths[30..].iter().filter(|d| **d == 0).count();
    let share = shallow as f64 / 3000.0;
    assert!((share - 2.0 / 3.0).abs() < 0.03, "depth-0 share {share}");
    assert!(
        generator
            .persona_uses("id-d")
            .await
            .iter()
            .all(|(_, n)| *n >= 1)
    );
}

#[tokio::test]
async fn saved_personas_are_not_paid_for_twice() {
    let file = MemoryStore::default();
    let model = model();
    let store: Arc<dyn Storage> = Arc::new(file.clone());
    let generator = PersonaGenerator::new(model.clone())
        .target_per_document(Some(20))
        .store(Arc::clone(&store));
    let report = generator.generate_all(&[doc("a"), doc("b")], 2).await;
    assert_eq!(report.personas, 60);
    assert_eq!(model.calls(), 12);
    // Saved after each new layer: twice per document.
    assert_eq!(file.0.lock().unwrap().len(), 4);
    let before = generator.personas(&doc("a")).await.unwrap();

    // A resumed run: a new generator, a new handle on the same file.
    let model2 = self::model();
    let store2: Arc<dyn Storage> = Arc::new(file.clone());
    let generator2 = PersonaGenerator::new(model2.clone())
        .target_per_document(Some(20))
        .store(store2);
    let report = generator2.generate_all(&[doc("a"), doc("b")], 2).await;
    assert_eq!(report.personas, 60);
    assert_eq!(report.requests, 0);
    for i in 0..25 {
        generator2.persona_for(&doc("a"), i).await.unwrap();
    }
    assert_eq!(model2.calls(), 0);
    assert_eq!(generator2.personas(&doc("a")).await.unwrap(), before);
    // In a run over a document whose text changed, its personas are generated afresh.
    let generator2 = PersonaGenerator::new(model2.clone())
        .target_per_document(Some(20))
        .store(Arc::new(file.clone()));
    let fresh = generator2
        .persona_for(&Document::with_id("id-a", "new text"), 0)
        .await
        .unwrap();
    assert_eq!(fresh.persona.unwrap().description, "new text/0");
    assert_eq!(model2.calls(), 1);

    // Preloaded documents work the same without a store.
    let model3 = self::model();
    let generator3 = PersonaGenerator::new(model3.clone())
        .target_per_document(Some(20))
        .preload(store.load_documents().await.unwrap());
    assert_eq!(pick(&generator3, &doc("b"), 0).await, ("b/0".to_owned(), 0));
    assert_eq!(model3.calls(), 0);
}

#[tokio::test]
async fn instructions_are_asked_in_a_personas_voice() {
    let model = Arc::new(ScriptedModel::new("both", |request| async move {
        let system = request.system_text().unwrap_or_default();
        let answer = if request.response_schema.as_ref().unwrap().name == "personas" {
            five(&subject(&request).1)
        } else {
            let who = system
                .lines()
                .find_map(|line| line.strip_prefix("The person is: "))
                .unwrap_or("nobody");
            let n = if system.contains("exactly 2 different") {
                2
            } else {
                0
            };
            json!({"instructions": [format!("{who}: how often?"), format!("{who}: which oil? ({n})")]})
                .to_string()
        };
        Ok(ChatResponse::text(answer).with_usage(Usage::new(10, 5)))
    }));
    let documents = Arc::new(InMemoryDocumentProvider::new([
        "Chains need oil every 300 km.",
    ]));
    let personas = Arc::new(PersonaGenerator::new(model.clone()));
    let generator =
        PersonaInstructionGenerator::new(model.clone(), documents, Arc::clone(&personas))
            .n_instructions(2);
    let batch = generator
        .generate(&InstructionRequest::new("You are a cyclist.", 3))
        .await
        .unwrap();
    let who = "Chains need oil every 300 km./0";
    assert_eq!(
        batch.instructions,
        [
            format!("{who}: how often?"),
            format!("{who}: which oil? (2)")
        ]
    );
    let persona = batch.persona.unwrap();
    assert_eq!(persona.description, "Chains need oil every 300 km./0");
    assert_eq!(persona.generation_depth, Some(0));
    assert_eq!(
        batch.requests, 2,
        "the persona call and the instruction call"
    );
    assert_eq!(batch.usage, Usage::new(20, 10));
    // The next batch gets the next persona and pays only for its questions.
    let batch = generator
        .generate(&InstructionRequest::new("You are a cyclist.", 4))
        .await
        .unwrap();
    let persona = batch.persona.unwrap();
    assert_eq!(persona.description, "Chains need oil every 300 km./1");
    assert!(batch.instructions[0].starts_with("Chains need oil every 300 km./1: "));
    assert_eq!(batch.requests, 1);
    assert_eq!(model.calls(), 3);
}

#[tokio::test]
async fn without_personas_the_asker_is_a_curious_user() {
    let model = Arc::new(ScriptedModel::new("no personas", |request| async move {
        if request.response_schema.as_ref().unwrap().name == "personas" {
            return Err(server_error());
        }
        let system = request.system_text().unwrap_or_default();
        assert!(system.contains("The person is: A curious user"));
        Ok(ChatResponse::text(r#"{"instructions": ["Why?"]}"#))
    }));
    let documents = Arc::new(InMemoryDocumentProvider::new(["a", "b"]));
    let personas = Arc::new(PersonaGenerator::new(model.clone()));
    let generator = PersonaInstructionGenerator::new(model.clone(), documents, personas)
        .num_random_contexts(2)
        .n_instructions(1);
    let batch = generator
        .generate(&InstructionRequest::new("", 1))
        .await
        .unwrap();
    let persona = batch.persona.unwrap();
    assert_eq!(persona.description, "A curious user");
    assert_eq!(persona.generation_depth, None);
    // Both documents were tried (two attempts each), then the questions.
    assert_eq!(batch.requests, 5);
    assert_eq!(batch.documents.len(), 2);
}

#[tokio::test]
async fn custom_persona_prompts_reach_the_model() {
    let model = Arc::new(ScriptedModel::new("scripted", |request| {
        let system = request.system_text().unwrap_or_default().to_owned();
        let layer = if system.starts_with("First layer") {
            "root"
        } else {
            "child"
        };
        async move { Ok(ChatResponse::text(five(layer))) }
    }));
    let generator = PersonaGenerator::new(model.clone())
        .target_per_document(Some(20))
        .from_text_prompt("First layer: five people, as JSON.")
        .from_persona_prompt("Deeper layer: five people around this one, as JSON.");
    let document = doc("Chains need oil.");
    // Six picks: the first layer (five), then the second is needed.
    for seed in 0..6 {
        pick(&generator, &document, seed).await;
    }
    let systems: Vec<String> = model
        .requests()
        .iter()
        .map(|r| r.system_text().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(systems[0], "First layer: five people, as JSON.");
    assert!(systems.len() > 1, "{systems:?}");
    assert!(
        systems[1..]
            .iter()
            .all(|s| s == "Deeper layer: five people around this one, as JSON."),
        "{systems:?}"
    );
}
