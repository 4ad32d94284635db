//! `docs/protocol.md` is the contract of the event stream: every event type the code
//! defines must be documented there, as a heading or a code span (`` `test_finished` ``).

use layered_runner::event::EventKind;

/// True when `name` is a heading's text (or a word of it) or appears as `` `name` ``.
fn documented(doc: &str, name: &str) -> bool {
    let code_span = format!("`{name}`");
    doc.contains(&code_span)
        || doc.lines().any(|line| {
            let line = line.trim_start();
            line.starts_with('#')
                && line
                    .trim_start_matches('#')
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|word| word == name)
        })
}

#[test]
fn every_event_type_is_documented_in_protocol_md() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must document the event protocol: {e}", path.display()));
    let missing: Vec<&str> = EventKind::ALL_TYPES
        .iter()
        .copied()
        .filter(|name| !documented(&doc, name))
        .collect();
    assert!(
        missing.is_empty(),
        "event types missing from docs/protocol.md (add a heading or a `code span`): {missing:?}"
    );
}

#[test]
fn documented_matches_headings_and_code_spans_only() {
    let doc = "# Events\n\n## test_finished\n\nSee `run_started`.\nplain test_skipped text\n";
    assert!(documented(doc, "test_finished"));
    assert!(documented(doc, "run_started"));
    assert!(
        !documented(doc, "test_skipped"),
        "plain prose is not enough"
    );
    assert!(!documented(doc, "test"), "a heading word must match whole");
}
