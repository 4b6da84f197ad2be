//! Shortening text for answers, messages, events and logs.

use std::borrow::Cow;

/// `text` cut to at most `max` bytes, on a character boundary, with
/// `marker` appended to show the cut; unchanged (borrowed) when it fits.
/// Bytes, not characters: the API server limits an Event's note in bytes.
pub(crate) fn truncate<'a>(text: &'a str, max: usize, marker: &str) -> Cow<'a, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{marker}", &text[..end]))
}

/// The messages of `err` and its sources, outermost first, each once (an
/// inner layer whose text an outer one already contains is dropped) and
/// without the documentation links rustls appends.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        let text = text.split(": https://docs.rs/").next().unwrap_or_default();
        if !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        current = e.source();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::{error_chain, truncate};
    use std::fmt;

    /// An error layer: its text and the layer it wraps.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|inner| inner as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let (outer, inner) = texts.split_first().expect("one layer");
        Layer(outer, (!inner.is_empty()).then(|| Box::new(chain(inner))))
    }

    #[test]
    fn error_chain_keeps_each_text_once_without_rustls_doc_links() {
        let err = chain(&[
            "error sending request for url (https://ironic:6385/v1/nodes)",
            "client error (Connect)",
            "invalid peer certificate: UnknownIssuer: \
             https://docs.rs/rustls/latest/rustls/enum.CertificateError.html",
            // Already said by the layer above: dropped.
            "UnknownIssuer",
        ]);
        assert_eq!(
            error_chain(&err),
            [
                "error sending request for url (https://ironic:6385/v1/nodes)",
                "client error (Connect)",
                "invalid peer certificate: UnknownIssuer",
            ]
        );
        // An outer layer that quotes its source: the source is not repeated.
        let err = chain(&["download failed: connection refused", "connection refused"]);
        assert_eq!(error_chain(&err), ["download failed: connection refused"]);
        assert_eq!(error_chain(&chain(&["only"])), ["only"]);
    }

    #[test]
    fn cuts_on_a_character_boundary_within_the_byte_limit() {
        assert_eq!(truncate("abc", 3, "..."), "abc");
        assert_eq!(truncate("abcd", 3, "..."), "abc...");
        // "é" is two bytes: 3 bytes hold one of them, not one and a half
        assert_eq!(truncate("ééé", 3, "…"), "é…");
        assert_eq!(truncate("ééé", 4, "…"), "éé…");
        assert_eq!(truncate("", 0, "…"), "");
    }
}
