//! The README's bad-input catalogue, as the tests that check it write its
//! rows: a command line as a shell user types it, and Markdown code spans.

/// An argument as a shell user types it: bare when it can be, in single
/// quotes, in double quotes when it holds a single quote, and invisible
/// characters as bash's `$'\u200b'`.
pub fn shell_word(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@".contains(c))
    {
        return arg.to_owned();
    }
    if !arg.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        let escaped: String = arg
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '\'' && c != '\\' {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", u32::from(c))
                }
            })
            .collect();
        return format!("$'{escaped}'");
    }
    if !arg.contains('\'') {
        return format!("'{arg}'");
    }
    assert!(
        !arg.contains(['"', '$', '\\', '`']),
        "{arg:?}: quote it by hand"
    );
    format!("\"{arg}\"")
}

/// `text` as one Markdown code span, for a cell of a table.
pub fn code_span(text: &str) -> String {
    assert!(!text.contains('|'), "{text:?} would break the table");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}
