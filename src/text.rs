//! The character rules of ids, names, capabilities and labels, shared by
//! every implementation and mirrored, range for range, by the CHECK
//! constraints of `migrations/sqlite/0003_text_rules.sql`.

use crate::error::{Error, Result};

/// The format characters (Unicode general category Cf, Unicode 16.0), as
/// inclusive ranges. Invisible: an id holding one looks like another id.
/// The schema's `GLOB` classes list exactly these ranges.
pub(crate) const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// The bidirectional embedding, override and isolate controls: they reorder
/// the text around them on screen. Names refuse these only; emoji sequences
/// and Persian or Indic names need the other format characters (U+200C,
/// U+200D).
pub(crate) const BIDI_CONTROLS: &[(char, char)] =
    &[('\u{202A}', '\u{202E}'), ('\u{2066}', '\u{2069}')];

fn within(ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// Which characters a kind of text refuses besides control characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refuses {
    /// Every format character (ids, capabilities, labels, task ids).
    FormatCharacters,
    /// The bidirectional controls only (names).
    BidiControls,
}

impl Refuses {
    fn refuses(self, c: char) -> bool {
        c.is_control()
            || match self {
                Self::FormatCharacters => within(FORMAT_CHARACTERS, c),
                Self::BidiControls => within(BIDI_CONTROLS, c),
            }
    }

    fn what(self) -> &'static str {
        match self {
            Self::FormatCharacters => "a control or invisible format character",
            Self::BidiControls => "a control character or a bidirectional control",
        }
    }
}

/// Checks a piece of text: at most `max` characters, none that `refuses`
/// refuses. Emptiness is the caller's rule.
pub(crate) fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    refuses: Refuses,
) -> Result<()> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::invalid(
            field,
            format!("{chars} characters, at most {max} are allowed"),
        ));
    }
    if let Some(bad) = value.chars().find(|&c| refuses.refuses(c)) {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?} contains {} (U+{:04X})",
                refuses.what(),
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

/// Bytes as text for an error message: valid UTF-8 escaped as Rust's
/// `{:?}` escapes it, invalid bytes as `\xNN`, all in double quotes.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            out.extend(c.escape_debug());
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_are_refused_in_ids_and_bidi_controls_in_names() {
        for c in [
            '\u{200B}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{202E}',
            '\u{E0041}',
        ] {
            let id = format!("a{c}b");
            assert!(check_text("id", &id, 128, Refuses::FormatCharacters).is_err());
        }
        // Emoji sequences and Persian names need the joiners.
        assert!(check_text("name", "👩\u{200D}💻", 256, Refuses::BidiControls).is_ok());
        assert!(check_text("name", "می\u{200C}خواهم", 256, Refuses::BidiControls).is_ok());
        for c in [
            '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\0', '\u{85}',
        ] {
            let name = format!("a{c}b");
            let err = check_text("name", &name, 256, Refuses::BidiControls).unwrap_err();
            assert!(err.to_string().starts_with("invalid name: "), "{err}");
        }
        for ok in ["\u{FFFD}", "🦀", "\u{2028}", "日本語", ""] {
            assert!(check_text("id", ok, 128, Refuses::FormatCharacters).is_ok());
        }
    }

    #[test]
    fn format_characters_are_exactly_unicode_category_cf() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        let differ: Vec<String> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|&c| {
                (c.general_category() == GeneralCategory::Format) != within(FORMAT_CHARACTERS, c)
            })
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(
            differ.is_empty(),
            "FORMAT_CHARACTERS and Unicode {:?} disagree on {differ:?}",
            unicode_properties::UNICODE_VERSION
        );
        for &(low, high) in BIDI_CONTROLS {
            assert!((low..=high).all(|c| within(FORMAT_CHARACTERS, c)));
        }
    }

    #[test]
    fn escaped_bytes_show_invalid_utf8_and_nul() {
        assert_eq!(escape_bytes(b"caf\xc3"), r#""caf\xc3""#);
        assert_eq!(escape_bytes(b"a\0b\"\n"), r#""a\0b\"\n""#);
        assert_eq!(escape_bytes("é🦀".as_bytes()), "\"é🦀\"");
    }
}
