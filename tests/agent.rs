//! `AgentInfo` and `AgentStatus` as values: JSON, text forms, validation.

use chrono::{DateTime, TimeDelta, Utc};
use roster::{AgentInfo, AgentStatus, Error, Priority, Result, Task, ZERO_TIME, to_json};

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
        ..AgentInfo::default()
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
fn the_default_agent_is_go_zero_value() -> serde_json::Result<()> {
    let zero = AgentInfo::default();
    assert_eq!(zero.last_heartbeat, ZERO_TIME);
    assert_eq!(ZERO_TIME.to_rfc3339(), "0001-01-01T00:00:00+00:00");
    assert_eq!(
        to_json(&zero)?,
        r#"{"id":"","name":"","status":"available","last_heartbeat":"0001-01-01T00:00:00Z","current_load":0,"max_load":0}"#
    );
    assert_eq!(serde_json::from_str::<AgentInfo>("{}")?, zero);
    // An agent that never sent a heartbeat is a valid agent.
    let never = AgentInfo {
        id: "a".into(),
        name: "A".into(),
        ..AgentInfo::default()
    };
    assert_eq!(never.clone().validated().ok(), Some(never));
    Ok(())
}

#[test]
fn heartbeats_are_written_as_go_writes_them() -> serde_json::Result<()> {
    let base = DateTime::parse_from_rfc3339("2026-02-20T07:16:53Z")
        .expect("time")
        .with_timezone(&Utc);
    for (nanos, go) in [
        (0, "2026-02-20T07:16:53Z"),
        (100_000_000, "2026-02-20T07:16:53.1Z"),
        (120_000_000, "2026-02-20T07:16:53.12Z"),
        (1, "2026-02-20T07:16:53.000000001Z"),
        (123_456_789, "2026-02-20T07:16:53.123456789Z"),
        (500_000, "2026-02-20T07:16:53.0005Z"),
    ] {
        let agent = AgentInfo {
            id: "a".into(),
            last_heartbeat: base + TimeDelta::nanoseconds(nanos),
            ..AgentInfo::default()
        };
        let expected = format!(
            r#"{{"id":"a","name":"","status":"available","last_heartbeat":"{go}","current_load":0,"max_load":0}}"#
        );
        assert_eq!(to_json(&agent)?, expected);
        assert_eq!(serde_json::to_string(&agent)?, expected);
        assert_eq!(serde_json::from_str::<AgentInfo>(&expected)?, agent);
    }
    Ok(())
}

#[test]
fn to_json_differs_from_serde_json_only_in_go_escapes() -> serde_json::Result<()> {
    let agent = AgentInfo {
        id: "x<y>&z".into(),
        name: "a\u{2028}b\u{2029}c \"q\" 🦀 漢字".into(),
        capabilities: vec!["<>".into()],
        ..AgentInfo::default()
    };
    assert_eq!(
        serde_json::to_string(&agent)?,
        "{\"id\":\"x<y>&z\",\"name\":\"a\u{2028}b\u{2029}c \\\"q\\\" 🦀 漢字\",\"capabilities\":[\"<>\"],\"status\":\"available\",\"last_heartbeat\":\"0001-01-01T00:00:00Z\",\"current_load\":0,\"max_load\":0}"
    );
    assert_eq!(
        to_json(&agent)?,
        r#"{"id":"x\u003cy\u003e\u0026z","name":"a\u2028b\u2029c \"q\" 🦀 漢字","capabilities":["\u003c\u003e"],"status":"available","last_heartbeat":"0001-01-01T00:00:00Z","current_load":0,"max_load":0}"#
    );
    let mut out = Vec::new();
    roster::to_json_writer(&mut out, &[&agent, &agent])?;
    assert_eq!(out, format!("[{0},{0}]", to_json(&agent)?).into_bytes());
    Ok(())
}

#[test]
fn go_shaped_documents_decode_to_the_zero_values() -> serde_json::Result<()> {
    let agent: AgentInfo = serde_json::from_str(
        r#"{"id":"a","name":"A","capabilities":null,"status":"busy","current_load":1,"max_load":2}"#,
    )?;
    assert!(agent.capabilities.is_empty());
    assert_eq!(agent.last_heartbeat, ZERO_TIME, "a missing heartbeat");
    let agent: AgentInfo = serde_json::from_str(r#"{"id":"a","last_heartbeat":null}"#)?;
    assert_eq!(agent.last_heartbeat, ZERO_TIME, "a null heartbeat");
    let agent: AgentInfo = serde_json::from_str(r#"{"id":"a","status":""}"#)?;
    assert_eq!(agent.status, AgentStatus::Available, "Go's zero status");
    let agent: AgentInfo = serde_json::from_str(
        r#"{"ID":"a","Max_Load":3,"max_load":4,"last_heartbeat":"2026-02-20T09:16:53.5+02:00"}"#,
    )?;
    assert_eq!(agent.id, "a");
    assert_eq!(agent.max_load, 4, "the last of a repeated key");
    assert_eq!(
        agent.last_heartbeat.to_rfc3339(),
        "2026-02-20T07:16:53.500+00:00"
    );
    Ok(())
}

#[test]
fn what_roster_types_cannot_hold_is_refused_clearly() {
    for (doc, message) in [
        (
            r#"{"id":"a","current_load":-1}"#,
            "invalid value: integer `-1`, expected u32",
        ),
        (
            r#"{"id":"a","max_load":4294967296}"#,
            "invalid value: integer `4294967296`, expected u32",
        ),
        (
            r#"{"id":"a","status":"sleeping"}"#,
            "unknown variant `sleeping`, expected one of `available`, `busy`, `offline`",
        ),
        (
            r#"{"id":"a","status":"Busy"}"#,
            "unknown variant `Busy`, expected one of `available`, `busy`, `offline`",
        ),
        (
            r#"{"id":"a","last_heartbeat":1771571813}"#,
            "invalid type: integer `1771571813`, expected an RFC 3339 time string",
        ),
        (
            r#"{"id":"a","capabilities":"rust"}"#,
            "invalid type: string \"rust\", expected an array",
        ),
        (
            r#"[{"id":"a"}]"#,
            "invalid type: sequence, expected an object (AgentInfo)",
        ),
    ] {
        let err = serde_json::from_str::<AgentInfo>(doc).expect_err(doc);
        assert!(err.to_string().starts_with(message), "{doc}: {err}");
    }
}

#[test]
fn times_are_read_as_strictly_as_go_reads_them_today() {
    // Go 1.19 accepted these three; Go 1.20 and later refuse them, as roster does.
    for (time, reason) in [
        ("2026-02-20T7:16:53Z", "not in the form"),
        ("2026-02-20T07:16:53,5Z", "expected Z or an offset"),
        ("2026-02-20T07:16:53+24:00", "offset out of range"),
        ("2026-02-20 07:16:53Z", "not in the form"),
    ] {
        let doc = format!(r#"{{"id":"a","last_heartbeat":"{time}"}}"#);
        let err = serde_json::from_str::<AgentInfo>(&doc).expect_err(&doc);
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("invalid time {time:?}: {reason}")),
            "{message}"
        );
        assert!(message.contains("expected RFC 3339"), "{message}");
    }
}

#[test]
fn a_heartbeat_go_could_not_write_is_an_error() {
    let late = AgentInfo {
        id: "a".into(),
        last_heartbeat: DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .expect("time")
            .with_timezone(&Utc)
            + TimeDelta::seconds(1),
        ..AgentInfo::default()
    };
    let err = to_json(&late).expect_err("year 10000");
    assert!(
        err.to_string()
            .contains("cannot be written as JSON: year 10000 is outside 0000..=9999"),
        "{err}"
    );
    assert!(serde_json::to_string(&late).is_err());
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
            Error::AlreadyClaimed {
                task_id: "build-7".into(),
                agent_id: "a".into(),
                token: 12,
            },
            "task build-7 is already claimed by agent a (token 12)",
        ),
        (
            Error::StaleClaim {
                task_id: "build-7".into(),
                token: Some(3),
                held: Some(12),
            },
            "stale token 3 for task build-7: it is held under token 12 now (the claim was recovered and taken again, or the token is wrong)",
        ),
        (
            Error::StaleClaim {
                task_id: "build-7".into(),
                token: Some(3),
                held: None,
            },
            "no claim of task build-7 is held (released or recovered already)",
        ),
        (
            Error::Interrupted {
                why: "the statement was cancelled".into(),
            },
            "interrupted: the statement was cancelled; nothing was changed",
        ),
        (
            Error::Unreadable {
                table: "agents",
                id: "\"caf\\xa9\"".into(),
                column: "name",
                reason: "not UTF-8".into(),
            },
            "unreadable row in agents: agent id \"caf\\xa9\", column name: not UTF-8; repair or delete the row by hand (the sqlite3 shell, or psql)",
        ),
        (
            Error::NoRegistry { path: path.clone() },
            "no registry at agents.db",
        ),
        (
            Error::UpgradeRefused {
                path: path.clone(),
                version: 3,
                rows: vec!["row one".into(), "row two".into()],
            },
            "agents.db: cannot upgrade to schema version 3: 2 row(s) break its rules, and the file was left untouched. Repair or delete them in the sqlite3 shell, then open it again: row one; row two",
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
            "database busy: other connections held the lock it needed for more than 5s; retry, or raise the busy timeout",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

/// Every error has the kind that says what a caller can do about it.
#[test]
fn every_error_has_its_kind() {
    use roster::ErrorKind;
    use std::path::PathBuf;
    let path = PathBuf::from("agents.db");
    let cases: Vec<(Error, ErrorKind)> = vec![
        (Error::MissingId, ErrorKind::InvalidInput),
        (Error::NotFound("a".into()), ErrorKind::NotFound),
        (
            Error::Invalid {
                field: "id",
                reason: "x".into(),
            },
            ErrorKind::InvalidInput,
        ),
        (Error::WriteRefused, ErrorKind::InvalidInput),
        (Error::NoEligibleAgent, ErrorKind::NoCapacity),
        (
            Error::AlreadyClaimed {
                task_id: "t".into(),
                agent_id: "a".into(),
                token: 1,
            },
            ErrorKind::Conflict,
        ),
        (
            Error::StaleClaim {
                task_id: "t".into(),
                token: None,
                held: None,
            },
            ErrorKind::Conflict,
        ),
        (
            Error::Interrupted { why: String::new() },
            ErrorKind::Interrupted,
        ),
        (Error::Busy(std::time::Duration::ZERO), ErrorKind::Busy),
        (
            Error::NoRegistry { path: path.clone() },
            ErrorKind::Unusable,
        ),
        (Error::NotADatabase { path }, ErrorKind::Unusable),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error}");
        assert_eq!(
            kind.is_transient(),
            matches!(kind, ErrorKind::Busy | ErrorKind::Storage)
        );
    }
}
