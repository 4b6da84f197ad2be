//! Shortening text for answers, messages and logs.

use std::borrow::Cow;

/// `text` cut after its first `max` characters, with `marker` appended to
/// show the cut; unchanged (borrowed) when it is not longer.
pub(crate) fn truncate<'a>(text: &'a str, max: usize, marker: &str) -> Cow<'a, str> {
    match text.char_indices().nth(max) {
        Some((end, _)) => Cow::Owned(format!("{}{marker}", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_on_characters_not_bytes() {
        assert_eq!(truncate("abc", 3, "..."), "abc");
        assert_eq!(truncate("abcd", 3, "..."), "abc...");
        assert_eq!(truncate("ééé", 2, "…"), "éé…");
        assert_eq!(truncate("", 0, "…"), "");
    }
}
