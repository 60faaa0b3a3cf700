//! `AgentInfo` and `AgentStatus` as values: JSON, text forms, validation.

use chrono::{DateTime, Utc};
use roster::{AgentInfo, AgentStatus, Error, Priority, Result, Task};

#[test]
fn status_text_forms_agree() -> Result<()> {
    for (status, text) in [
        (AgentStatus::Available, "available"),
        (AgentStatus::Busy, "busy"),
        (AgentStatus::Offline, "offline"),
    ] {
        assert_eq!(status.to_string(), text);
        assert_eq!(status.as_str(), text);
        assert_eq!(text.parse::<AgentStatus>()?, status);
        assert_eq!(
            serde_json::to_string(&status).ok(),
            Some(format!("\"{text}\""))
        );
    }
    assert_eq!(AgentStatus::default(), AgentStatus::Available);
    let err = "Busy".parse::<AgentStatus>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid status: \"Busy\" is not one of \"available\", \"busy\", \"offline\""
    );
    Ok(())
}

#[test]
fn json_uses_the_go_field_names() {
    let agent = AgentInfo {
        id: "a1".into(),
        name: "Alpha".into(),
        capabilities: vec!["go".into(), "testing".into()],
        status: AgentStatus::Busy,
        last_heartbeat: DateTime::parse_from_rfc3339("2026-02-20T07:16:53.123456789Z")
            .expect("time")
            .with_timezone(&Utc),
        current_load: 2,
        max_load: 5,
    };
    let json = serde_json::to_value(&agent).expect("serialise");
    assert_eq!(
        json,
        serde_json::json!({
            "id": "a1",
            "name": "Alpha",
            "capabilities": ["go", "testing"],
            "status": "busy",
            "last_heartbeat": "2026-02-20T07:16:53.123456789Z",
            "current_load": 2,
            "max_load": 5
        })
    );
    let back: AgentInfo = serde_json::from_value(json).expect("deserialise");
    assert_eq!(back, agent);
}

#[test]
fn empty_capabilities_are_left_out_and_accepted_when_absent() {
    let agent = AgentInfo {
        id: "a".into(),
        name: "A".into(),
        ..AgentInfo::default()
    };
    let json = serde_json::to_value(&agent).expect("serialise");
    assert!(json.get("capabilities").is_none(), "{json}");
    let back: AgentInfo = serde_json::from_value(json).expect("deserialise");
    assert_eq!(back, agent);
}

#[test]
fn a_document_written_by_the_go_registry_decodes() {
    // encoding/json output of the Go registry's AgentInfo: RFC 3339 with
    // nanoseconds and a numeric offset.
    let go = r#"{"id":"agent-7","name":"Seven","capabilities":["go","frontend"],"status":"offline","last_heartbeat":"2026-02-20T08:16:53.000000001+01:00","current_load":0,"max_load":0}"#;
    let agent: AgentInfo = serde_json::from_str(go).expect("decode Go JSON");
    assert_eq!(agent.id, "agent-7");
    assert_eq!(agent.capabilities, ["go", "frontend"]);
    assert_eq!(agent.status, AgentStatus::Offline);
    assert_eq!(
        agent.last_heartbeat.to_rfc3339(),
        "2026-02-20T07:16:53.000000001+00:00"
    );
    // And one without capabilities (omitempty).
    let bare = r#"{"id":"b","name":"B","status":"available","last_heartbeat":"0001-01-01T00:00:00Z","current_load":0,"max_load":0}"#;
    let agent: AgentInfo = serde_json::from_str(bare).expect("decode Go JSON");
    assert!(agent.capabilities.is_empty());
}

#[test]
fn unknown_status_in_json_is_an_error() {
    let bad = r#"{"id":"b","name":"B","status":"sleeping","last_heartbeat":"2026-01-01T00:00:00Z","current_load":0,"max_load":0}"#;
    assert!(serde_json::from_str::<AgentInfo>(bad).is_err());
}

#[test]
fn validated_drops_duplicates_and_names_the_field() -> Result<()> {
    let agent = AgentInfo {
        id: "a".into(),
        name: "A".into(),
        capabilities: ["x", "y", "x"].map(String::from).to_vec(),
        ..AgentInfo::default()
    }
    .validated()?;
    assert_eq!(agent.capabilities, ["x", "y"]);
    // As in the Go registry, only the id is required.
    let unnamed = AgentInfo {
        name: String::new(),
        ..agent.clone()
    }
    .validated()?;
    assert_eq!(unnamed.name, "");
    let err = AgentInfo {
        name: "evil\u{202E}txt".into(),
        ..agent
    }
    .validated()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid name: \"evil\\u{202e}txt\" contains a control character or a bidirectional control (U+202E)"
    );
    assert!(matches!(err, Error::Invalid { field: "name", .. }));
    Ok(())
}

#[test]
fn capacity_follows_status_and_load() {
    let mut agent = AgentInfo {
        max_load: 2,
        current_load: 1,
        ..AgentInfo::default()
    };
    assert!(agent.has_capacity());
    agent.current_load = 2;
    assert!(
        !agent.has_capacity(),
        "a full available agent has no capacity"
    );
    agent.max_load = 0;
    assert!(agent.has_capacity(), "max_load 0 is unlimited");
    agent.status = AgentStatus::Offline;
    assert!(!agent.has_capacity());
}

#[test]
fn priority_text_forms_agree() -> Result<()> {
    for (priority, text) in [
        (Priority::Low, "low"),
        (Priority::Medium, "medium"),
        (Priority::High, "high"),
        (Priority::Critical, "critical"),
    ] {
        assert_eq!(priority.to_string(), text);
        assert_eq!(text.parse::<Priority>()?, priority);
        assert_eq!(
            serde_json::to_string(&priority).ok(),
            Some(format!("\"{text}\""))
        );
    }
    assert_eq!(Priority::default(), Priority::Medium);
    assert!(matches!(
        "urgent".parse::<Priority>(),
        Err(Error::Invalid {
            field: "priority",
            ..
        })
    ));
    Ok(())
}

#[test]
fn task_json_round_trips_and_defaults() {
    let task = Task {
        id: "t-1".into(),
        labels: vec!["gpu".into()],
        priority: Priority::Critical,
    };
    let json = serde_json::to_value(&task).expect("serialise");
    assert_eq!(
        json,
        serde_json::json!({ "id": "t-1", "labels": ["gpu"], "priority": "critical" })
    );
    assert_eq!(
        serde_json::from_value::<Task>(json).expect("deserialise"),
        task
    );
    let bare: Task = serde_json::from_str(r#"{"id":"t-2"}"#).expect("deserialise");
    assert_eq!(
        bare,
        Task {
            id: "t-2".into(),
            ..Task::default()
        }
    );
}

/// Every error's message, as a caller sees it.
#[test]
fn every_error_says_what_was_wrong() {
    use std::path::PathBuf;
    use std::time::Duration;
    let path = PathBuf::from("agents.db");
    let cases: Vec<(Error, &str)> = vec![
        (Error::MissingId, "agent ID is required"),
        (Error::NotFound("a".into()), "agent not found: a"),
        (
            Error::Invalid {
                field: "name",
                reason: "must not be empty".into(),
            },
            "invalid name: must not be empty",
        ),
        (Error::NoEligibleAgent, "no eligible agent for task"),
        (
            Error::NothingToRelease("a".into()),
            "agent a holds no load to release",
        ),
        (
            Error::WriteRefused,
            "the statement writes to the registry, and this SQL is read-only",
        ),
        (
            Error::NotADatabase { path: path.clone() },
            "agents.db: not an SQLite database (left untouched)",
        ),
        (
            Error::NotARegistry {
                path: path.clone(),
                reason: "it holds 3 schema objects".into(),
            },
            "agents.db: not a roster registry: it holds 3 schema objects (left untouched)",
        ),
        (
            Error::SchemaTooNew {
                path,
                found: 9,
                supported: 2,
            },
            "agents.db: schema version 9 is newer than this build of roster knows (2); upgrade roster (the file was left untouched)",
        ),
        (
            Error::Busy(Duration::from_secs(5)),
            "database busy: another connection held the write lock for more than 5s; retry, or raise the busy timeout",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}
