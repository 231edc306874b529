//! Preference pairs through the library: candidates are real chat requests (the
//! system prompt a system message, never flattened into the user's text), each
//! variant's temperature and model reach its request, the judge's best and worst make
//! the pair, and storages that cannot keep pairs refuse them with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use afterimage_core::Storage as _;
use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, ConversationRow, Evaluation, Evaluator, GeneratedInstructions, Grade,
    InstructionGenerator, InstructionRequest, Role, StrategyError, Usage, Verdict,
};
use afterimage_engine::{
    ConversationGenerator, EngineError, GenerateOptions, PairFormat, PairStrategy,
    PreferenceGenerator,
};
use afterimage_storage::{JsonlStorage, SqliteStorage};

#[derive(Debug)]
struct Questions;

#[async_trait::async_trait]
impl InstructionGenerator for Questions {
    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let _ = request;
        Ok(GeneratedInstructions {
            instructions: vec!["How do I reset my router to factory settings?".to_owned()],
            context: "Router manual: hold the reset button for ten seconds.".to_owned(),
            requests: 0,
            ..Default::default()
        })
    }
}

/// Scores an answer by the temperature it names: cooler is better.
#[derive(Debug)]
struct CoolerIsBetter;

#[async_trait::async_trait]
impl Evaluator for CoolerIsBetter {
    async fn evaluate(&self, row: &ConversationRow) -> Result<Verdict, StrategyError> {
        let last = row.conversations.last().map(|m| m.content.clone());
        let t: f64 = last
            .as_deref()
            .and_then(|a| a.rsplit(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.5);
        let score = 1.0 - t;
        Ok(Verdict {
            evaluation: Evaluation {
                criteria: BTreeMap::new(),
                overall_grade: Grade::from_score(score),
            },
            score,
            usage: Usage::default(),
            requests: 1,
        })
    }
}

/// Answers with the temperature it was asked at.
fn model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("primary", |request| async move {
        let t = request.temperature.unwrap_or(0.0);
        Ok(ChatResponse::text(format!("Hold the reset button. {t:.1}")))
    }))
}

fn pairs(
    model: &Arc<ScriptedModel>,
    storage: Arc<dyn afterimage_core::Storage>,
    strategy: PairStrategy,
) -> Result<PreferenceGenerator, EngineError> {
    let conversation = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(Arc::clone(model) as _)
        .instruction_generator(Arc::new(Questions))
        .dedup_questions(false)
        .storage(storage)
        .build()?;
    PreferenceGenerator::builder()
        .conversation(conversation)
        .judge(Arc::new(CoolerIsBetter))
        .strategy(strategy)
        .num_responses(3)
        .secondary_model("second")
        .format(PairFormat::Dpo)
        .build()
}

#[tokio::test]
async fn candidates_are_chat_requests_and_the_coolest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let model = model();
    let generator = pairs(
        &model,
        Arc::new(JsonlStorage::new(&path)),
        PairStrategy::Temperature,
    )
    .unwrap();
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(3).max_concurrency(2))
        .await
        .unwrap();
    assert_eq!(report.run.rows_written, 3);
    assert_eq!(report.preference.pairs_kept, 3);
    assert_eq!(report.preference.win_rates["temperature_0.1"].win_rate, 1.0);
    let requests = model.requests();
    assert_eq!(requests.len(), 9, "three candidates per pair");
    for request in &requests {
        assert_eq!(request.messages[0].role, Role::System);
        assert!(
            request.messages[0]
                .content
                .starts_with("You are a support agent.")
        );
        assert_eq!(request.messages[1].role, Role::User);
        assert!(
            !request.messages[1]
                .content
                .contains("You are a support agent.")
        );
    }
    let mut temperatures: Vec<String> = requests
        .iter()
        .map(|r| format!("{:.1}", r.temperature.unwrap()))
        .collect();
    temperatures.sort();
    temperatures.dedup();
    assert_eq!(temperatures, ["0.1", "0.5", "0.9"]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .all(|r| r["chosen"].as_str().unwrap().ends_with("0.1"))
    );
    assert!(
        rows.iter()
            .all(|r| r["rejected"].as_str().unwrap().ends_with("0.9"))
    );
}

#[tokio::test]
async fn the_model_strategy_asks_the_secondary_model_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = model();
    let generator = pairs(
        &model,
        Arc::new(JsonlStorage::new(dir.path().join("p.jsonl"))),
        PairStrategy::Model,
    )
    .unwrap();
    // Both models answer at the respondent's temperature: every pair ties, so every
    // attempt is discarded until the budget stops the run, saying why.
    let err = generator
        .generate(GenerateOptions::new().num_dialogs(2).max_failures(3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("min_score_gap"), "{err}");
    let models: Vec<Option<String>> = model.requests().into_iter().map(|r| r.model).collect();
    assert!(models.contains(&Some("second".to_owned())), "{models:?}");
    assert!(models.contains(&None), "the primary is asked too");

    let refused = PreferenceGenerator::builder()
        .conversation(
            ConversationGenerator::builder()
                .respondent_prompt("p")
                .model(model as _)
                .instruction_generator(Arc::new(Questions))
                .build()
                .unwrap(),
        )
        .judge(Arc::new(CoolerIsBetter))
        .strategy(PairStrategy::Model)
        .build()
        .unwrap_err();
    assert!(refused.to_string().contains("secondary_model"), "{refused}");
}

#[tokio::test]
async fn sqlite_keeps_pairs_and_resumes_them_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let storage = Arc::new(SqliteStorage::open(&path).unwrap());
    let generator = pairs(&model(), storage.clone(), PairStrategy::Temperature).unwrap();
    generator
        .generate(GenerateOptions::new().num_dialogs(2))
        .await
        .unwrap();
    let ids = storage.existing_ids().await.unwrap();
    assert_eq!(ids.len(), 2);
    // A resumed run with a larger count writes only the missing pairs.
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(4).resume(true))
        .await
        .unwrap();
    assert_eq!((report.run.rows_resumed, report.run.rows_written), (2, 2));
    let mut all = storage.existing_ids().await.unwrap();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
    assert!(ids.iter().all(|id| all.contains(id)));
}

/// Keeps dialog rows only: the trait's default for records.
#[derive(Debug)]
struct RowsOnly;

#[async_trait::async_trait]
impl afterimage_core::Storage for RowsOnly {
    async fn write(&self, _row: &ConversationRow) -> Result<(), afterimage_core::StorageError> {
        Ok(())
    }

    fn location(&self) -> String {
        "rows-only".to_owned()
    }
}

#[tokio::test]
async fn a_storage_without_records_refuses_pairs_with_the_reason() {
    let generator = pairs(&model(), Arc::new(RowsOnly), PairStrategy::Temperature).unwrap();
    let err = generator
        .generate(GenerateOptions::new().num_dialogs(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not preference pairs"), "{err}");
}

/// Never answers in a shape anyone can read.
#[derive(Debug)]
struct Garbled;

#[async_trait::async_trait]
impl Evaluator for Garbled {
    async fn evaluate(&self, _row: &ConversationRow) -> Result<Verdict, StrategyError> {
        Err(StrategyError::MalformedOutput {
            message: "no scores; the answer starts: I think it is fine".to_owned(),
        })
    }
}

#[tokio::test]
async fn a_judge_that_never_answers_readably_stops_the_run_early() {
    let dir = tempfile::tempdir().unwrap();
    let model = model();
    let conversation = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(Arc::clone(&model) as _)
        .instruction_generator(Arc::new(Questions))
        .dedup_questions(false)
        .storage(Arc::new(JsonlStorage::new(dir.path().join("p.jsonl"))))
        .build()
        .unwrap();
    let generator = PreferenceGenerator::builder()
        .conversation(conversation)
        .judge(Arc::new(Garbled))
        .build()
        .unwrap();
    let err = generator
        .generate(GenerateOptions::new().num_dialogs(5).max_concurrency(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("never answered in readable JSON"),
        "{err}"
    );
    // Stopped after the judge's first ten answers (two per attempt), not after the
    // budget of fifty attempts.
    assert!(model.calls() <= 12, "{} requests", model.calls());
}
