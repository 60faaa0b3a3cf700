//! roster's JSON against the bytes Go produces. `tests/go` is a Go program
//! that declares the Go registry's `AgentInfo` field for field and tag for
//! tag and writes and reads it with `encoding/json`; these tests build it with
//! the real `go` toolchain and compare its output with roster's, byte for
//! byte.
//!
//! Without `go` on the PATH these tests fail: install it
//! (`apt-get install -y golang-go`). No network is needed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use roster::{AgentInfo, AgentStatus, ZERO_TIME, to_json};

/// The Go program, built once per run, and the Go version that built it.
struct GoProgram {
    binary: PathBuf,
    /// (major, minor), e.g. (1, 19).
    version: (u32, u32),
}

/// A `go` command isolated from the machine's Go setup: its caches live
/// under this test's target directory, modules come from nowhere (the
/// program needs only the standard library) and the toolchain is never
/// downloaded.
fn go_command(work: &Path) -> Command {
    let mut command = Command::new("go");
    command
        .env("HOME", work)
        .env("GOCACHE", work.join("cache"))
        .env("GOPATH", work.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0");
    command
}

fn go_program() -> &'static GoProgram {
    static PROGRAM: OnceLock<GoProgram> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-json");
        std::fs::create_dir_all(&work).expect("Go work directory");
        let version = go_command(&work)
            .args(["env", "GOVERSION"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests compare roster's JSON with Go's and need the go toolchain \
                     (apt-get install -y golang-go): running `go` failed: {e}"
                )
            });
        assert!(version.status.success(), "go env GOVERSION: {version:?}");
        let version = parse_go_version(&String::from_utf8_lossy(&version.stdout));
        let binary = work.join("gojson");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
        let build = go_command(&work)
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .output()
            .expect("run go build");
        assert!(
            build.status.success(),
            "go build of {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&build.stderr)
        );
        GoProgram { binary, version }
    })
}

/// "go1.19.8" -> (1, 19).
fn parse_go_version(text: &str) -> (u32, u32) {
    let mut parts = text
        .trim()
        .trim_start_matches("go")
        .split(['.', ' ', '-'])
        .map(|part| {
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            part[..digits].parse::<u32>()
        });
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("cannot read the Go version from {text:?}"),
    }
}

/// Runs the Go program in `mode` with `lines` on its standard input and
/// returns its output lines.
fn run_go(mode: &str, lines: &[String]) -> Vec<String> {
    let program = go_program();
    let mut child = Command::new(&program.binary)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Go program");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("Go program output");
    writer.join().expect("writer thread").expect("write stdin");
    assert!(
        output.status.success(),
        "gojson {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("Go writes UTF-8")
        .lines()
        .map(String::from)
        .collect()
}

/// What Go writes for `roster` bytes: the same, except that Go before 1.22
/// wrote `\b` and `\f` as `\u0008` and `\u000c` (roster writes them as Go
/// does today).
fn as_this_go_writes(roster: &str) -> String {
    if go_program().version >= (1, 22) {
        roster.to_owned()
    } else {
        roster.replace("\\b", "\\u0008").replace("\\f", "\\u000c")
    }
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test time")
        .with_timezone(&Utc)
}

fn agent(id: &str, name: &str, capabilities: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: name.into(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        status: AgentStatus::Available,
        last_heartbeat: at("2026-02-20T07:16:53Z"),
        current_load: 1,
        max_load: 4,
        ..AgentInfo::default()
    }
}

/// Agents covering every form the encoding can take. Not all of them pass
/// validation (control characters in names): the encoding is tested alone.
fn catalogue() -> Vec<AgentInfo> {
    let every_ascii: String = (0_u8..128).map(char::from).collect();
    let mut agents = vec![
        AgentInfo {
            id: "zero".into(),
            ..AgentInfo::default()
        },
        AgentInfo::default(),
        agent("html", "<script>alert('x') && \"y\"</script>", &["<>", "&"]),
        agent(
            "separators",
            "line\u{2028}paragraph\u{2029}end",
            &["\u{2028}"],
        ),
        agent("emoji", "crab 🦀, family 👨‍👩‍👧", &["🦀"]),
        agent("replacement", "bad \u{FFFD} byte", &[]),
        agent("cjk", "漢字かなカナ한국어", &["日本語"]),
        agent("ascii", &every_ascii, &["\u{7f}", "/", "\\"]),
        agent(
            "c1-and-nbsp",
            "\u{85}\u{a0}\u{200b}\u{feff}\u{e000}\u{10ffff}",
            &[],
        ),
        agent("no-capabilities", "None", &[]),
        agent("capabilities", "Some", &["rust", "gpu", "linux"]),
        AgentInfo {
            current_load: u32::MAX,
            max_load: u32::MAX,
            ..agent("max-loads", "Max", &[])
        },
        AgentInfo {
            current_load: 7,
            max_load: 0,
            ..agent("unlimited", "Unlimited", &["x"])
        },
        AgentInfo {
            status: AgentStatus::Busy,
            ..agent("busy", "Busy", &[])
        },
        AgentInfo {
            status: AgentStatus::Offline,
            ..agent("offline", "Offline", &[])
        },
    ];
    for (id, time) in [
        ("fraction-none", "2026-02-20T07:16:53Z"),
        ("fraction-1", "2026-02-20T07:16:53.1Z"),
        ("fraction-12", "2026-02-20T07:16:53.12Z"),
        ("fraction-120", "2026-02-20T07:16:53.120Z"),
        ("fraction-1ns", "2026-02-20T07:16:53.000000001Z"),
        ("fraction-9", "2026-02-20T07:16:53.123456789Z"),
        ("fraction-1us", "2026-02-20T07:16:53.000001Z"),
        ("epoch", "1970-01-01T00:00:00Z"),
        ("before-epoch", "1969-12-31T23:59:59.999999999Z"),
        ("year-0", "0000-01-01T00:00:00Z"),
        ("zero-plus-1ns", "0001-01-01T00:00:00.000000001Z"),
        ("year-9999", "9999-12-31T23:59:59.999999999Z"),
        ("leap-day", "2024-02-29T12:00:00.5Z"),
    ] {
        agents.push(AgentInfo {
            last_heartbeat: at(time),
            ..agent(id, id, &[])
        });
    }
    agents
}

/// The catalogue as the Go program's neutral input: the heartbeat as Unix
/// seconds and nanoseconds, so that Go's time parsing plays no part.
fn spec(agent: &AgentInfo) -> String {
    serde_json::json!({
        "id": agent.id,
        "name": agent.name,
        "capabilities": agent.capabilities,
        "status": agent.status.as_str(),
        "unix_seconds": agent.last_heartbeat.timestamp(),
        "nanos": agent.last_heartbeat.timestamp_subsec_nanos(),
        "current_load": agent.current_load,
        "max_load": agent.max_load,
    })
    .to_string()
}

#[test]
fn every_agent_is_written_as_go_writes_it() -> serde_json::Result<()> {
    let agents = catalogue();
    let specs: Vec<String> = agents.iter().map(spec).collect();
    let go = run_go("marshal", &specs);
    assert_eq!(
        go.len(),
        agents.len() + 1,
        "one line per agent, then the list"
    );
    for (agent, go_bytes) in agents.iter().zip(&go) {
        let roster = to_json(agent)?;
        assert_eq!(as_this_go_writes(&roster), *go_bytes, "{agent:?}");
        // serde_json alone differs only in the escapes Go adds.
        let plain = serde_json::to_string(agent)?;
        let escaped = plain
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029");
        assert_eq!(escaped, roster, "{agent:?}");
    }
    assert_eq!(
        as_this_go_writes(&to_json(&agents)?),
        go[agents.len()],
        "the whole list"
    );
    Ok(())
}

#[test]
fn the_escapes_go_adds_are_in_the_catalogue() -> serde_json::Result<()> {
    // Guards the catalogue: the comparison above covers every escape.
    let all = to_json(&catalogue())?;
    for escape in [
        "\\u003c", "\\u003e", "\\u0026", "\\u2028", "\\u2029", "\\u0000", "\\u001f", "\\b", "\\f",
        "\\n", "\\r", "\\t", "\\\"", "\\\\",
    ] {
        assert!(all.contains(escape), "no {escape} in the catalogue");
    }
    for fraction in [
        ".1Z",
        ".12Z",
        ".000000001Z",
        ".123456789Z",
        ":53Z",
        "0001-01-01T00:00:00Z",
    ] {
        assert!(all.contains(fraction), "no {fraction} in the catalogue");
    }
    Ok(())
}

/// Whether a document must decode.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Accepted,
    Refused,
}
use Expect::{Accepted, Refused};

/// Documents as other Go programs send them, and documents both refuse.
/// Only what every Go version since 1.19 agrees on is here: Go 1.20 made
/// time parsing strict, and roster follows the strict form.
const DOCUMENTS: &[(&str, Expect, &str)] = &[
    (
        "the Go registry's own output",
        Accepted,
        r#"{"id":"go-1","name":"One","capabilities":["go","testing"],"status":"busy","last_heartbeat":"2026-02-20T07:16:53.123456789Z","current_load":2,"max_load":5}"#,
    ),
    (
        "an offset +02:00",
        Accepted,
        r#"{"id":"go-2","name":"Two","status":"available","last_heartbeat":"2026-02-20T09:16:53.1+02:00","current_load":0,"max_load":0}"#,
    ),
    (
        "an offset -05:30 across midnight",
        Accepted,
        r#"{"id":"go-3","name":"Three","status":"offline","last_heartbeat":"2026-02-19T22:00:00-05:30","current_load":0,"max_load":1}"#,
    ),
    (
        "an offset -00:00",
        Accepted,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53-00:00"}"#,
    ),
    (
        "capabilities null (a Go struct without omitempty)",
        Accepted,
        r#"{"id":"go-4","name":"Four","capabilities":null,"status":"available","last_heartbeat":"2026-02-20T07:16:53Z","current_load":0,"max_load":0}"#,
    ),
    (
        "capabilities empty",
        Accepted,
        r#"{"id":"a","capabilities":[]}"#,
    ),
    (
        "no last_heartbeat",
        Accepted,
        r#"{"id":"go-5","name":"Five","status":"busy","current_load":1,"max_load":2}"#,
    ),
    (
        "last_heartbeat null",
        Accepted,
        r#"{"id":"go-6","last_heartbeat":null}"#,
    ),
    (
        "every field null",
        Accepted,
        r#"{"id":null,"name":null,"capabilities":null,"status":null,"last_heartbeat":null,"current_load":null,"max_load":null}"#,
    ),
    ("an empty object", Accepted, "{}"),
    ("null", Accepted, "null"),
    (
        "an empty status, the Go registry's zero status",
        Accepted,
        r#"{"id":"a","status":""}"#,
    ),
    (
        "unknown fields",
        Accepted,
        r#"{"id":"a","extra":{"nested":[1,2,{"x":null}]},"retired":true,"status":"busy"}"#,
    ),
    (
        "keys in other cases",
        Accepted,
        r#"{"ID":"a","NAME":"n","Capabilities":["x"],"Status":"busy","Last_Heartbeat":"2026-02-20T07:16:53.5Z","CURRENT_LOAD":1,"Max_Load":3}"#,
    ),
    (
        "a long s folding to s",
        Accepted,
        r#"{"id":"a","capabilitieſ":["x"],"laſt_heartbeat":"2026-02-20T07:16:53Z"}"#,
    ),
    (
        "a repeated key: the last wins",
        Accepted,
        r#"{"id":"a","id":"b","capabilities":["x"],"capabilities":["y","z"],"max_load":1,"max_load":2}"#,
    ),
    (
        "a repeated key set to null",
        Accepted,
        r#"{"id":"a","id":null,"capabilities":["x"],"capabilities":null,"last_heartbeat":"2026-02-20T07:16:53Z","last_heartbeat":null}"#,
    ),
    (
        "a null capability",
        Accepted,
        r#"{"id":"a","capabilities":["x",null,"y"]}"#,
    ),
    (
        "twelve fractional digits",
        Accepted,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53.123456789999Z"}"#,
    ),
    (
        "fractions of every length",
        Accepted,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53.10000+01:00"}"#,
    ),
    (
        "years 0000 and 9999",
        Accepted,
        r#"{"id":"a","name":"0000-01-01T00:00:00Z","last_heartbeat":"9999-12-31T23:59:59.999999999Z"}"#,
    ),
    (
        "escaped strings",
        Accepted,
        r#"{"id":"\u0061\/b","name":"\u003cb\u003e \ud83e\udd80 \u2028 tab\there \"q\" \\ \u00e9","capabilities":["\u6f22"]}"#,
    ),
    (
        "raw UTF-8 and HTML",
        Accepted,
        "{\"id\":\"a\",\"name\":\"<b>&\u{2028}\u{2029}🦀漢\u{FFFD}\"}",
    ),
    (
        "the largest loads",
        Accepted,
        r#"{"id":"a","current_load":4294967295,"max_load":4294967295}"#,
    ),
    (
        "whitespace everywhere",
        Accepted,
        " { \"id\" : \"a\" ,\t\"capabilities\" : [ \"x\" , \"y\" ] , \"max_load\" : 3 } ",
    ),
    (
        "a time as a number",
        Refused,
        r#"{"id":"a","last_heartbeat":1771571813}"#,
    ),
    (
        "a time with a lowercase t",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20t07:16:53Z"}"#,
    ),
    (
        "a time with a space for T",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20 07:16:53Z"}"#,
    ),
    (
        "a time without an offset",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53"}"#,
    ),
    (
        "a time with a lowercase z",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53z"}"#,
    ),
    (
        "a time with an offset without a colon",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53+0200"}"#,
    ),
    (
        "a date only",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20"}"#,
    ),
    (
        "a time followed by a space",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53Z "}"#,
    ),
    (
        "February 30",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-30T07:16:53Z"}"#,
    ),
    (
        "February 29 of a common year",
        Refused,
        r#"{"id":"a","last_heartbeat":"2025-02-29T07:16:53Z"}"#,
    ),
    (
        "month 13",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-13-01T07:16:53Z"}"#,
    ),
    (
        "hour 24",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T24:00:00Z"}"#,
    ),
    (
        "second 60",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-12-31T23:59:60Z"}"#,
    ),
    (
        "a period without digits",
        Refused,
        r#"{"id":"a","last_heartbeat":"2026-02-20T07:16:53.Z"}"#,
    ),
    (
        "a load as a string",
        Refused,
        r#"{"id":"a","current_load":"3"}"#,
    ),
    (
        "a load with a fraction",
        Refused,
        r#"{"id":"a","current_load":1.5}"#,
    ),
    (
        "a load with an exponent",
        Refused,
        r#"{"id":"a","max_load":1e2}"#,
    ),
    (
        "a load as a boolean",
        Refused,
        r#"{"id":"a","max_load":true}"#,
    ),
    ("an id as a number", Refused, r#"{"id":7}"#),
    ("a name as an array", Refused, r#"{"id":"a","name":["n"]}"#),
    (
        "capabilities as a string",
        Refused,
        r#"{"id":"a","capabilities":"rust"}"#,
    ),
    (
        "a capability as a number",
        Refused,
        r#"{"id":"a","capabilities":["rust",1]}"#,
    ),
    ("a status as a number", Refused, r#"{"id":"a","status":1}"#),
    ("an array", Refused, r#"[{"id":"a"}]"#),
    ("a string", Refused, r#""a""#),
    ("a trailing comma", Refused, r#"{"id":"a",}"#),
    ("trailing text", Refused, r#"{"id":"a"} x"#),
    ("single quotes", Refused, "{'id':'a'}"),
];

#[test]
fn documents_decode_as_go_decodes_them() -> serde_json::Result<()> {
    let documents: Vec<String> = DOCUMENTS
        .iter()
        .map(|(_, _, doc)| doc.to_string())
        .collect();
    let go = run_go("decode", &documents);
    assert_eq!(go.len(), DOCUMENTS.len(), "one line per document");
    for ((what, expect, doc), go_line) in DOCUMENTS.iter().zip(&go) {
        let go_refused = go_line.starts_with("error: ");
        let roster = serde_json::from_str::<AgentInfo>(doc);
        match (expect, &roster) {
            (Accepted, Ok(agent)) => {
                assert!(!go_refused, "{what}: Go refused {doc}: {go_line}");
                assert_eq!(
                    as_this_go_writes(&to_json(agent)?),
                    *go_line,
                    "{what}: {doc}"
                );
            }
            (Refused, Err(_)) => {
                assert!(go_refused, "{what}: Go accepted {doc}: {go_line}");
            }
            (_, result) => panic!("{what}: expected {expect:?}, roster gave {result:?} for {doc}"),
        }
    }
    Ok(())
}

#[test]
fn decoded_agents_are_what_go_leaves_in_them() -> serde_json::Result<()> {
    // Beyond the bytes: the values of the cases Go programs send most.
    let find = |what: &str| {
        let (_, _, doc) = DOCUMENTS
            .iter()
            .find(|(name, _, _)| *name == what)
            .expect("document in the catalogue");
        serde_json::from_str::<AgentInfo>(doc)
    };
    let null_capabilities = find("capabilities null (a Go struct without omitempty)")?;
    assert!(null_capabilities.capabilities.is_empty());
    let no_heartbeat = find("no last_heartbeat")?;
    assert_eq!(no_heartbeat.last_heartbeat, ZERO_TIME);
    assert_eq!(no_heartbeat.status, AgentStatus::Busy);
    let offset = find("an offset +02:00")?;
    assert_eq!(offset.last_heartbeat, at("2026-02-20T07:16:53.1Z"));
    assert_eq!(
        offset.last_heartbeat - at("2026-02-20T09:16:53.1+02:00"),
        TimeDelta::zero()
    );
    assert_eq!(find("null")?, AgentInfo::default());
    assert_eq!(find("an empty object")?, AgentInfo::default());
    assert_eq!(find("a null capability")?.capabilities, ["x", "", "y"]);
    Ok(())
}

#[test]
fn floats_are_written_as_go_writes_them() -> serde_json::Result<()> {
    let mut doubles: Vec<f64> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        0.1,
        0.1 + 0.2,
        1.0 / 3.0,
        123456789.125,
        1e20,
        1e21,
        999999999999999900000.0,
        1e-6,
        0.00000099999,
        1e-7,
        -2.5e-10,
        1.5e300,
        1e100,
        1e-100,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        f64::EPSILON,
        9007199254740993.0,
    ];
    let mut singles: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        1e20,
        1e21,
        1e-6,
        1e-7,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        16777217.0,
    ];
    // Small odd numbers times every power of two: where a value can lie
    // exactly halfway between two shortest forms (2^-25 is
    // 2.98023223876953125e-8: Go writes ...312e-8, the even one).
    for exponent in -1074..=1023 {
        for odd in [
            1_u64, 3, 5, 7, 9, 15, 25, 27, 63, 125, 255, 625, 1023, 3125, 15625,
        ] {
            let value = odd as f64 * 2_f64.powi(exponent);
            if value.is_finite() && value != 0.0 {
                doubles.push(value);
            }
        }
    }
    for exponent in -149..=127 {
        for odd in [1_u32, 3, 5, 7, 9, 15, 25, 125, 625] {
            let value = odd as f32 * 2_f32.powi(exponent);
            if value.is_finite() && value != 0.0 {
                singles.push(value);
            }
        }
    }
    // Every float32 around 133234.625, which is halfway between 133234.62
    // and 133234.63 (Go writes the even one, Rust's shortest form the other).
    singles.extend((0x4802_1800_u32..0x4802_2000).map(f32::from_bits));
    // And a spread of bit patterns: every exponent, random mantissas.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while doubles.len() < 40_000 {
        let value = f64::from_bits(next());
        if value.is_finite() {
            doubles.push(value);
        }
    }
    while singles.len() < 10_000 {
        let value = f32::from_bits((next() >> 32) as u32);
        if value.is_finite() {
            singles.push(value);
        }
    }
    let lines: Vec<String> = doubles
        .iter()
        .map(|v| format!("64 {:x}", v.to_bits()))
        .chain(singles.iter().map(|v| format!("32 {:x}", v.to_bits())))
        .collect();
    let go = run_go("floats", &lines);
    assert_eq!(go.len(), lines.len());
    // The catalogue holds ties, where Rust's own shortest form differs.
    assert_eq!(to_json(&2_f64.powi(-25))?, "2.9802322387695312e-8");
    assert_eq!(format!("{:e}", 2_f64.powi(-25)), "2.9802322387695313e-8");
    assert!(singles.contains(&f32::from_bits(0x4802_1ca8)), "133234.625");
    let roster = doubles
        .iter()
        .map(to_json)
        .chain(singles.iter().map(to_json));
    for ((line, go_text), roster_text) in lines.iter().zip(&go).zip(roster) {
        assert_eq!(roster_text?, *go_text, "{line}");
    }
    Ok(())
}

#[test]
fn go_version_is_read() {
    assert_eq!(parse_go_version("go1.19.8\n"), (1, 19));
    assert_eq!(parse_go_version("go1.22rc1"), (1, 22));
    assert_eq!(parse_go_version("go1.24.0 X:boringcrypto"), (1, 24));
    assert!(
        go_program().version >= (1, 19),
        "{:?}",
        go_program().version
    );
}
