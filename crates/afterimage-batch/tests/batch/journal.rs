//! The journal on real files: records come back as written, a last line torn by a
//! crash is dropped (and cut, so the next record starts clean), a line damaged in
//! the middle is an error, another run's journal is refused, and the summary names
//! the open batches and unconfirmed intents.

use std::io::Write;

use afterimage_batch::{
    BatchError, Journal, JournalRecord, StoredOutcome, StoredResponse, request_hash,
};
use afterimage_core::{ChatRequest, ChatResponse, Message, Usage};

use crate::item;

fn request(id: &str, attempt: u32) -> JournalRecord {
    let key = id.rsplit_once('-').unwrap().0.to_owned();
    JournalRecord::Request {
        custom_id: id.into(),
        key,
        attempt,
        hash: request_hash("m", &ChatRequest::new(vec![Message::user(id)])),
    }
}

fn ok(id: &str, text: &str) -> JournalRecord {
    let mut response = ChatResponse::text(text).with_usage(Usage {
        input_tokens: 10,
        output_tokens: 3,
        ..Usage::default()
    });
    response.batched = true;
    JournalRecord::Response {
        custom_id: id.into(),
        hash: "h".into(),
        outcome: StoredOutcome::Ok {
            response: StoredResponse::from(&response),
        },
    }
}

#[test]
fn records_come_back_and_a_torn_last_line_is_dropped_then_cut() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "run1").unwrap();
    assert!(dir.path().join("results").is_dir());
    let written = [
        request("run1-000001-00a-1", 1),
        ok("run1-000001-00a-1", "Hi"),
    ];
    journal.append(&written).unwrap();
    let records = journal.records().unwrap();
    assert!(matches!(&records[0], JournalRecord::Run { run_id, .. } if run_id == "run1"));
    assert_eq!(&records[1..], &written);

    // A crash in the middle of a write leaves half a line without its newline.
    let path = dir.path().join("journal.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"applied","batch_"#).unwrap();
    drop(file);
    assert_eq!(journal.records().unwrap().len(), 3);
    drop(journal);

    let reopened = Journal::open(dir.path(), "run1").unwrap();
    let applied = JournalRecord::Applied {
        batch_id: "batch_1".into(),
    };
    reopened.append(std::slice::from_ref(&applied)).unwrap();
    let records = reopened.records().unwrap();
    assert_eq!(records.len(), 4, "{records:?}");
    assert_eq!(records[3], applied);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("batch_\""),
        "the torn line is still there: {text}"
    );
}

#[test]
fn a_damaged_line_in_the_middle_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "run1").unwrap();
    journal.append(&[request("run1-000001-00a-1", 1)]).unwrap();
    let path = dir.path().join("journal.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("not json\n");
    std::fs::write(&path, &text).unwrap();
    journal
        .append(&[JournalRecord::Applied {
            batch_id: "b".into(),
        }])
        .unwrap();
    let error = journal.records().unwrap_err();
    assert!(matches!(error, BatchError::Journal { .. }), "{error}");
    assert!(error.to_string().contains("line 3"), "{error}");
}

#[test]
fn another_runs_journal_is_refused_with_both_ids_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path(), "first").unwrap());
    let error = Journal::open(dir.path(), "second").unwrap_err();
    assert!(matches!(error, BatchError::OtherRun { .. }), "{error}");
    let message = error.to_string();
    for needle in [
        "`first`",
        "`second`",
        "resume run `first`",
        "another output",
    ] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }
    // The same run reopens it.
    Journal::open(dir.path(), "first").unwrap();
}

#[test]
fn the_summary_names_open_batches_and_unconfirmed_intents() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "run7").unwrap();
    let items: Vec<_> = (0..3)
        .map(|i| item(&format!("run7-00000{i}-00a-1"), "m", "Hi"))
        .collect();
    journal
        .record_intent("run7-round1-0", "kfeed", 1, &items)
        .unwrap();
    journal
        .record_intent("run7-round1-1", "kfeed", 1, &items[..1])
        .unwrap();
    journal
        .record_intent("run7-round2-0", "kbeef", 2, &items[1..])
        .unwrap();
    journal
        .append(&[
            JournalRecord::Submitted {
                local_key: "run7-round1-0".into(),
                batch_id: "batch_a".into(),
                backend: "kfeed".into(),
            },
            JournalRecord::Submitted {
                local_key: "run7-round1-1".into(),
                batch_id: "batch_b".into(),
                backend: "kfeed".into(),
            },
            ok("run7-000000-00a-1", "Hi"),
            JournalRecord::Applied {
                batch_id: "batch_b".into(),
            },
        ])
        .unwrap();
    assert!(dir.path().join("requests/run7-round1-0.jsonl").is_file());
    let summary = Journal::summary(dir.path()).unwrap();
    assert_eq!(summary.run_id, "run7");
    assert_eq!(summary.open.len(), 1);
    let open = &summary.open[0];
    assert_eq!(
        (
            open.batch_id.as_str(),
            open.local_key.as_str(),
            open.backend.as_str(),
            open.requests
        ),
        ("batch_a", "run7-round1-0", "kfeed", 3)
    );
    assert_eq!(summary.unsubmitted.len(), 1);
    assert_eq!(summary.unsubmitted[0].local_key, "run7-round2-0");
    assert_eq!(summary.unsubmitted[0].requests, 2);
    assert_eq!(summary.responses, 1);
}

#[test]
fn a_summary_where_no_journal_is_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let error = Journal::summary(dir.path()).unwrap_err();
    assert!(
        error.to_string().contains("no batch journal here"),
        "{error}"
    );
}

#[test]
fn an_answer_comes_back_from_the_journal_as_it_went_in() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "run8").unwrap();
    let mut response = ChatResponse::text("Let me look.").with_usage(Usage {
        input_tokens: 900,
        output_tokens: 40,
        cached_input_tokens: 800,
        reasoning_tokens: 12,
        ..Usage::default()
    });
    response.message.reasoning = Some("The user wants the weather.".into());
    response.message.tool_calls = vec![afterimage_core::ToolCall {
        id: "call_1".into(),
        kind: "function".into(),
        function: afterimage_core::FunctionCall {
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        },
    }];
    response.finish_reason = Some(afterimage_core::FinishReason::ToolCalls);
    response.model = "gpt-4o-mini-2024-07-18".into();
    response.batched = true;
    journal
        .append(&[JournalRecord::Response {
            custom_id: "run8-000001-00a-1".into(),
            hash: "h".into(),
            outcome: StoredOutcome::Ok {
                response: StoredResponse::from(&response),
            },
        }])
        .unwrap();
    let records = Journal::open(dir.path(), "run8")
        .unwrap()
        .records()
        .unwrap();
    let Some(JournalRecord::Response {
        outcome: StoredOutcome::Ok { response: stored },
        ..
    }) = records.last()
    else {
        panic!("{records:?}");
    };
    assert_eq!(ChatResponse::from(stored.clone()), response);
}
