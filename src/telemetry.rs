//! Logging setup and redaction helpers shared by every subcommand.

use std::borrow::Cow;

/// Log output format (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global tracing subscriber (level from `RUST_LOG`, default info).
pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in log files are noise, and
    // writing them costs measurable CPU per admission request.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Replaces any user/password inside URLs with `***`, so a value can be
/// echoed in messages and logs. Works on a single URL, on strings that do not
/// parse as URLs (`http:u:p@h`, `http:\\u:p@h`, a password containing `/`),
/// and on free text holding URLs (error messages from HTTP clients).
///
/// It errs on the side of hiding: an `@` in a URL token is left alone only
/// when the URL parses cleanly with no userinfo and its authority has no `@`.
pub fn redact_url(input: &str) -> Cow<'_, str> {
    if !input.contains('@') {
        return Cow::Borrowed(input);
    }
    // Tokens are separated by characters that cannot be part of a URL as
    // printed in a message.
    let separator = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`');
    let mut out = String::with_capacity(input.len());
    for piece in input.split_inclusive(separator) {
        let token = piece.strip_suffix(separator).unwrap_or(piece);
        out.push_str(redact_token(token).as_deref().unwrap_or(token));
        out.push_str(&piece[token.len()..]);
    }
    if out == input {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(out)
    }
}

/// Redacts the userinfo of one URL-looking token, or `None` when there is none.
fn redact_token(token: &str) -> Option<String> {
    let at = token.rfind('@')?;
    // The scheme: ASCII letters (then letters, digits, `+-.`) before a ':'
    // that comes before the '@'. Look for it anywhere in the token, so that
    // "(http://u:p@h)" or "url=http://u:p@h" are covered too.
    let scheme_colon = find_scheme_colon(&token[..at])?;
    let after_colon = &token[scheme_colon + 1..];
    let slashes = after_colon.len() - after_colon.trim_start_matches(['/', '\\']).len();
    let userinfo_start = scheme_colon + 1 + slashes;
    if userinfo_start > at {
        return None;
    }
    let candidate = &token[find_scheme_start(token, scheme_colon)..];
    if let Ok(url) = url::Url::parse(candidate.trim_end_matches([')', ',', ';', '.', ']']))
        && url.username().is_empty()
        && url.password().is_none()
    {
        let authority = token[userinfo_start..].split(['/', '?', '#', '\\']).next();
        if !authority.unwrap_or_default().contains('@') {
            return None;
        }
    }
    Some(format!("{}***{}", &token[..userinfo_start], &token[at..]))
}

fn find_scheme_colon(s: &str) -> Option<usize> {
    s.match_indices(':').map(|(i, _)| i).find(|&colon| {
        let start = find_scheme_start(s, colon);
        start < colon && s.as_bytes()[start].is_ascii_alphabetic()
    })
}

/// Start of the run of scheme characters that ends at `colon`.
fn find_scheme_start(s: &str, colon: usize) -> usize {
    s[..colon]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .last()
        .map_or(colon, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_url("http://u:p@h/a.iso"), "http://***@h/a.iso");
        assert_eq!(
            redact_url("https://user@h:8443/x?y#z"),
            "https://***@h:8443/x?y#z"
        );
        assert_eq!(redact_url("http://a:b@c@h/a.iso"), "http://***@h/a.iso");
    }

    #[test]
    fn redacts_malformed_urls_and_slashes_in_passwords() {
        assert_eq!(redact_url("http:u:p@h/x"), "http:***@h/x");
        assert_eq!(redact_url("http:\\\\u:p@h/x"), "http:\\\\***@h/x");
        assert_eq!(redact_url("http://u:pa/ss@h/x"), "http://***@h/x");
        assert_eq!(redact_url("HTTPS://u:p@h"), "HTTPS://***@h");
    }

    #[test]
    fn redacts_every_url_in_free_text() {
        assert_eq!(
            redact_url(
                "error sending request for url (http://u:p@h/a.iso): refused; see https://x:y@z/b"
            ),
            "error sending request for url (http://***@h/a.iso): refused; see https://***@z/b"
        );
        assert_eq!(redact_url("url=\"http://u:p@h\""), "url=\"http://***@h\"");
    }

    #[test]
    fn leaves_plain_urls_and_non_urls_alone() {
        assert_eq!(redact_url("mail me at a@b.c"), "mail me at a@b.c");
        assert_eq!(redact_url("https://h/v1/a@b?x=@"), "https://h/v1/a@b?x=@");
        assert_eq!(redact_url("http://h/a@b.iso"), "http://h/a@b.iso");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url(""), "");
    }
}
