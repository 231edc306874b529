//! `analyze` with the diversity figures: two datasets compared, the embedding figure
//! through `--config` against the mock, and the diversity line of `generate`.

use super::*;

/// Four rows asking the same question: every first-question pair is a near duplicate.
fn repetitive(path: &Path) {
    let row = r#"{"conversations":[{"role":"user","content":"How do I reset my password?"},{"role":"assistant","content":"Click Forgot Password on the login screen."}]}"#;
    std::fs::write(path, format!("{row}\n").repeat(4)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_compares_two_datasets_with_the_embedding_figure() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, path) = project(LOCAL);
    let generated = dir.path().join("generated.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &generated)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The run summary's diversity line, on stderr as stdout holds the JSON report.
    assert!(
        run.stderr.contains("diversity: first questions self-BLEU"),
        "{}",
        run.stderr
    );
    serde_json::from_str::<serde_json::Value>(run.stdout.trim()).unwrap();

    let same = dir.path().join("same.jsonl");
    repetitive(&same);
    let embedding = dir.path().join("embed.yaml");
    std::fs::write(
        &embedding,
        format!(
            "{LOCAL}retrieval:\n  retriever: embedding\n  embedding: {{model_name: mock-embed, base_url: '{}'}}\n",
            server.openai_base_url()
        ),
    )
    .unwrap();
    let html = dir.path().join("cmp.html");
    let (a, b) = (generated.to_str().unwrap(), same.to_str().unwrap());
    let run = Cli::new(&["analyze", a, "--compare", b, "--json", "--html"])
        .args(&[
            html.to_str().unwrap(),
            "--config",
            embedding.to_str().unwrap(),
        ])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(json["a"]["dataset"], a);
    assert_eq!(json["b"]["dataset"], b);
    let first = &json["a"]["analysis"]["diversity"]["first_questions"];
    assert_eq!(first["texts"], 12, "{first}");
    assert_eq!(first["self_bleu"]["sampled"], 12, "{first}");
    assert_eq!(first["self_bleu"]["of"], 12, "{first}");
    let theirs = &json["b"]["analysis"]["diversity"];
    assert_eq!(
        theirs["first_questions"]["near_duplicate_pairs"]["value"],
        1.0
    );
    assert_eq!(theirs["loops"]["looping_rows"]["sampled"], 4);
    for side in ["a", "b"] {
        let e = &json[side]["analysis"]["diversity"]["embedding"];
        assert_eq!(e["model"], "mock-embed", "{e}");
        assert!(
            e["mean_cosine"]["value"].as_f64().unwrap() <= 1.0 + 1e-9,
            "{e}"
        );
    }
    // Identical questions embed identically.
    let cosine = theirs["embedding"]["mean_cosine"]["value"]
        .as_f64()
        .unwrap();
    assert!((cosine - 1.0).abs() < 1e-6, "{cosine}");
    let change = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == "near_duplicate_pairs" && c["scope"] == "first_questions")
        .unwrap();
    assert_eq!(change["b"], 1.0, "{change}");
    assert_eq!(change["verdict"], "worse", "{change}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("generated.jsonl") && page.contains("same.jsonl"));
    assert!(page.contains("Self-BLEU") && page.contains("class=\"worse\""));
    assert!(server.stats().embeddings >= 2, "{}", server.stats());

    // Without --json the page goes next to A, named after both.
    let run = Cli::new(&["analyze", a, "--compare", b]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(dir.path().join("generated_vs_same.html").is_file());

    // One dataset: the figures under `diversity`, sampled n of N.
    let run = Cli::new(&["analyze", b, "--json"]).run().await;
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let user = &json["diversity"]["user_turns"]["compression_ratio"];
    assert_eq!(
        (user["sampled"].clone(), user["of"].clone()),
        (4.into(), 4.into())
    );
    assert!(json["diversity"]["embedding"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_config_without_an_embedding_model_is_a_usage_error() {
    let (dir, path) = project(LOCAL);
    let rows = dir.path().join("rows.jsonl");
    repetitive(&rows);
    let run = Cli::new(&["analyze", rows.to_str().unwrap(), "--json"])
        .args(&["--config", path.to_str().unwrap()])
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("names no embedding model"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("retrieval"), "{}", run.stderr);
}
