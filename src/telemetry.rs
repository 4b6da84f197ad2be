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
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Replaces any user/password inside a URL-looking string with `***`, so a
/// value can be echoed in messages and logs. Works on strings that do not
/// parse as URLs too (it redacts `scheme://userinfo@`).
pub fn redact_url(input: &str) -> Cow<'_, str> {
    let Some(scheme_end) = input.find("://") else {
        return Cow::Borrowed(input);
    };
    let rest_start = scheme_end + 3;
    let rest = &input[rest_start..];
    // The authority ends at the first '/', '?', '#' (or '\\', which WHATWG
    // treats as '/'); userinfo is whatever precedes the last '@' inside it.
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***@{}", &input[..rest_start], &rest[at + 1..])),
        None => Cow::Borrowed(input),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_url("http://u:p@h/a.iso"), "http://***@h/a.iso");
        assert_eq!(redact_url("https://user@h:8443/x?y#z"), "https://***@h:8443/x?y#z");
        assert_eq!(redact_url("http://a:b@c@h/a.iso"), "http://***@h/a.iso");
    }

    #[test]
    fn leaves_plain_urls_and_non_urls_alone() {
        assert_eq!(redact_url("http://h/a@b.iso"), "http://h/a@b.iso");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url(""), "");
    }
}
