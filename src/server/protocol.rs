//! The WebSocket protocol's own messages (beside the events themselves).
//!
//! Server to client: a [`snapshot`](snapshot_text) (the whole `RunState`) or a
//! [`resume`](resume_text) acknowledgement, each followed by events in `seq` order,
//! exactly as in `events.jsonl`. Client to server: [`ClientRequest`]
//! (`{"since_seq":N}`, `{"thread_id":"..."}`); anything else is ignored.
//! `docs/protocol.md` ("Live progress") documents every message with an example.

use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, PROTOCOL_VERSION, RunState};

/// Why a snapshot was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotReason {
    /// A new connection.
    Connect,
    /// The client fell behind; its queue was discarded.
    Lagged,
    /// The client asked to resume from a `seq` the ring no longer holds (or never had).
    ResumeTooOld,
}

impl SnapshotReason {
    /// The `reason` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Connect => "connect",
            SnapshotReason::Lagged => "lagged",
            SnapshotReason::ResumeTooOld => "resume_too_old",
        }
    }
}

/// A message a client may send (unknown fields and other messages are ignored).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ClientRequest {
    /// Restart the stream after this `seq`.
    #[serde(default)]
    pub since_seq: Option<u64>,
    /// From now on, only events with this `thread_id`.
    #[serde(default)]
    pub thread_id: Option<String>,
}

impl ClientRequest {
    /// Parse a client's text message; `None` when it is not a request.
    pub fn parse(text: &str) -> Option<Self> {
        let req: Self = serde_json::from_str(text).ok()?;
        (req.since_seq.is_some() || req.thread_id.is_some()).then_some(req)
    }
}

/// `{"type":"snapshot",...}` around an already serialized (and redacted) `RunState`.
pub fn snapshot_text(
    state_json: &str,
    reason: SnapshotReason,
    run_id: &str,
    thread_id: Option<&str>,
) -> String {
    let thread = thread_id
        .map(|t| format!(",\"thread_id\":{}", json_str(t)))
        .unwrap_or_default();
    format!(
        "{{\"type\":\"snapshot\",\"v\":{PROTOCOL_VERSION},\"reason\":\"{}\",\"run_id\":{}{thread},\"state\":{state_json}}}",
        reason.as_str(),
        json_str(run_id),
    )
}

/// `{"type":"resume",...}`: the `replay` events after `since_seq` follow.
pub fn resume_text(run_id: &str, since_seq: u64, replay: usize) -> String {
    format!(
        "{{\"type\":\"resume\",\"v\":{PROTOCOL_VERSION},\"run_id\":{},\"since_seq\":{since_seq},\"replay\":{replay}}}",
        json_str(run_id)
    )
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A server message, as a client reads it.
#[derive(Debug, Clone)]
pub enum ServerMessage {
    /// The whole state; replaces whatever the client had.
    Snapshot {
        /// The state.
        state: Box<RunState>,
        /// Why it was sent (`connect`, `lagged`, `resume_too_old`).
        reason: String,
    },
    /// The events after `since_seq` follow.
    Resume {
        /// Run id.
        run_id: String,
        /// Resumed after this `seq`.
        since_seq: u64,
        /// Events replayed from the ring before live ones.
        replay: u64,
    },
    /// An event this build knows.
    Event(Box<Event>),
    /// An event of a type this build does not know (a newer server): its `seq`.
    Unknown {
        /// Its `seq`, when it has one.
        seq: Option<u64>,
    },
}

/// Parse a server's text message: one message, or a batch (`batch=1`: a JSON array of
/// events) of them, in order.
pub fn parse_server_messages(text: &str) -> Result<Vec<ServerMessage>, serde_json::Error> {
    match serde_json::from_str(text)? {
        Value::Array(items) => items.into_iter().map(message_of).collect(),
        value => Ok(vec![message_of(value)?]),
    }
}

fn message_of(value: Value) -> Result<ServerMessage, serde_json::Error> {
    match value.get("type").and_then(Value::as_str) {
        Some("snapshot") => {
            let reason = value["reason"].as_str().unwrap_or("connect").to_string();
            let state = serde_json::from_value(value["state"].clone())?;
            Ok(ServerMessage::Snapshot {
                state: Box::new(state),
                reason,
            })
        }
        Some("resume") => Ok(ServerMessage::Resume {
            run_id: value["run_id"].as_str().unwrap_or_default().to_string(),
            since_seq: value["since_seq"].as_u64().unwrap_or(0),
            replay: value["replay"].as_u64().unwrap_or(0),
        }),
        _ => {
            let seq = value.get("seq").and_then(Value::as_u64);
            match serde_json::from_value::<Event>(value) {
                Ok(e) => Ok(ServerMessage::Event(Box::new(e))),
                Err(_) => Ok(ServerMessage::Unknown { seq }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one message of `text`.
    fn parse_one(text: &str) -> ServerMessage {
        let mut messages = parse_server_messages(text).unwrap();
        assert_eq!(messages.len(), 1, "{text}");
        messages.remove(0)
    }

    #[test]
    fn snapshot_and_resume_round_trip() {
        let state = RunState {
            run_id: "r\"1".into(),
            seq: 7,
            ..RunState::default()
        };
        let json = serde_json::to_string(&state).unwrap();
        let text = snapshot_text(&json, SnapshotReason::Lagged, "r\"1", Some("t"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["thread_id"], "t");
        match parse_one(&text) {
            ServerMessage::Snapshot { state: s, reason } => {
                assert_eq!(*s, state);
                assert_eq!(reason, "lagged");
            }
            other => panic!("{other:?}"),
        }
        match parse_one(&resume_text("r", 4, 3)) {
            ServerMessage::Resume {
                since_seq, replay, ..
            } => assert_eq!((since_seq, replay), (4, 3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_one(r#"{"type":"from_the_future","seq":9}"#),
            ServerMessage::Unknown { seq: Some(9) }
        ));
        // A batch is its messages in order.
        let batch =
            parse_server_messages(r#"[{"type":"from_the_future","seq":9},{"type":"x","seq":10}]"#)
                .unwrap();
        assert!(matches!(
            batch.as_slice(),
            [
                ServerMessage::Unknown { seq: Some(9) },
                ServerMessage::Unknown { seq: Some(10) }
            ]
        ));
    }

    #[test]
    fn client_requests() {
        assert_eq!(
            ClientRequest::parse(r#"{"since_seq":12}"#),
            Some(ClientRequest {
                since_seq: Some(12),
                thread_id: None
            })
        );
        assert_eq!(
            ClientRequest::parse(r#"{"thread_id":"t-1","extra":true}"#)
                .unwrap()
                .thread_id
                .as_deref(),
            Some("t-1")
        );
        assert_eq!(ClientRequest::parse(r#"{"hello":1}"#), None);
        assert_eq!(ClientRequest::parse("not json"), None);
    }
}
