//! URL rules 1-7 and the URL warnings, shared by `spec.dataImage.url`
//! (BareMetalHost) and `spec.url` (DataImage).
//!
//! Rule 7 is the subtle one: the URL is handed on unchanged to Ironic
//! (Python) and the BMC, which do not apply the WHATWG parser's silent repairs
//! (`http:///a.iso` → host `a.iso`, `\` → `/`, `a/../b` → `b`, `0x7f.1` →
//! `127.0.0.1`, ...). So the input is compared, part by part, with what the
//! `url` crate made of it; only harmless normalisation (scheme and host case,
//! IDN → punycode, an explicit default port, an empty path becoming `/`,
//! percent-encoding of non-ASCII characters) is accepted.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use percent_encoding::{CONTROLS, utf8_percent_encode};
use url::{Host, Position, Url};

use super::field_error::{FieldError, go_quote};

/// Longest accepted URL (rule 6), in characters.
const MAX_URL_CHARS: usize = 2048;

/// What the URL rules found.
#[derive(Debug, Default)]
pub struct UrlReport {
    pub errors: Vec<FieldError>,
    /// Warnings about the URL alone (`.iso`, fragment); only for URLs
    /// without errors.
    pub warnings: Vec<String>,
    /// The URL has no errors and its scheme is http (not https).
    pub plain_http: bool,
}

/// Runs rules 1-7 on `value` (the field at `field`), plus the URL warnings.
/// `credentials_hint` says where credentials belong instead (rule 5).
pub fn check_url(field: &str, value: Option<&str>, credentials_hint: &str) -> UrlReport {
    let mut report = UrlReport::default();
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        report.errors.push(FieldError::required(field, ""));
        return report;
    };
    // Parsed once: the echo needs to know whether it parsed, rule 2 why not.
    let parsed = Url::parse(raw);
    let echo = echo_url(raw, parsed.as_ref().ok());
    let invalid = |detail: &str| FieldError::invalid(field, &echo, detail);
    // Rule 6's error, reported in rule order below.
    let chars = raw.chars().count();
    let too_long = (chars > MAX_URL_CHARS).then(|| {
        let detail = format!("must be at most {MAX_URL_CHARS} characters (it has {chars})");
        FieldError::invalid(field, &crate::text::truncate(&echo, 64, "..."), &detail)
    });

    // Rule 1: whitespace and control characters (the WHATWG parser strips or
    // drops them silently, so they are also repairs); rule 2 (and rule 4
    // where the parser rejects the port or host).
    let refused = if raw.trim() != raw {
        Err("must not begin or end with whitespace".to_string())
    } else if raw.chars().any(char::is_control) {
        Err("must not contain control characters (such as tab or newline)".to_string())
    } else {
        parsed.map_err(|err| match err {
            url::ParseError::RelativeUrlWithoutBase => {
                "must be an absolute URL starting with http:// or https://".to_string()
            }
            url::ParseError::InvalidPort => "port must be a number from 1 to 65535".to_string(),
            url::ParseError::EmptyHost => "host must not be empty".to_string(),
            other => format!("is not a valid URL: {other}"),
        })
    };
    let url = match refused {
        Ok(url) => url,
        Err(detail) => {
            report.errors.push(invalid(&detail));
            report.errors.extend(too_long);
            return report;
        }
    };

    // Rule 3.
    let http_or_https = matches!(url.scheme(), "http" | "https");
    if !http_or_https {
        report.errors.push(invalid("scheme must be http or https"));
    } else {
        // Rule 4 (an http(s) URL without a host fails to parse above).
        if url.host_str().is_none_or(str::is_empty) {
            report.errors.push(invalid("host must not be empty"));
        }
        if url.port() == Some(0) {
            report
                .errors
                .push(invalid("port must be a number from 1 to 65535"));
        }
    }

    // Rule 5.
    if has_userinfo(raw, &url) {
        report.errors.push(invalid(&format!(
            "must not contain a user name or password; {credentials_hint}"
        )));
    }

    // Rule 6.
    report.errors.extend(too_long);

    // Rule 7.
    if http_or_https && let Some(detail) = repair(raw, &url) {
        report.errors.push(invalid(&detail));
    }

    if report.errors.is_empty() {
        report.plain_http = url.scheme() == "http";
        if !url.path().to_ascii_lowercase().ends_with(".iso") {
            report.warnings.push(format!(
                "{field}: the path does not end in .iso; only ISO 9660 images can be attached \
                 (fine for a pre-signed URL that serves an ISO)"
            ));
        }
        if url.fragment().is_some() {
            report.warnings.push(format!(
                "{field}: the fragment (#...) is never sent to the image server; remove it"
            ));
        }
    }
    report
}

/// Whether the authority carries userinfo, also the empty `http://@h/` that
/// the parser drops silently.
fn has_userinfo(raw: &str, url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some() || split_authority(raw).0.contains('@')
}

/// The authority of `raw` as RFC 3986 splits it (after `scheme:` and any
/// slashes, up to the first `/`, `\`, `?` or `#`), and the rest of `raw`.
fn split_authority(raw: &str) -> (&str, &str) {
    let Some(colon) = raw.find(':') else {
        return ("", raw);
    };
    let rest = raw[colon + 1..].trim_start_matches(['/', '\\']);
    rest.split_at(rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len()))
}

/// The URL as it may appear in a message: a clean parsed URL as written,
/// otherwise everything between `scheme:` and the last `@` replaced by
/// `***` (broader than `telemetry::redact_url`, because a malformed URL may
/// hide a password behind `http:u:p@h` or a `/` in the password).
fn echo_url<'a>(raw: &'a str, parsed: Option<&Url>) -> Cow<'a, str> {
    if parsed.is_some_and(|u| !has_userinfo(raw, u)) || !raw.contains('@') {
        return crate::telemetry::redact_url(raw);
    }
    let Some(at) = raw.rfind('@') else {
        return Cow::Borrowed(raw);
    };
    let start = match raw.find(':') {
        Some(colon) if colon < at => {
            let after = &raw[colon + 1..at];
            colon + 1 + (after.len() - after.trim_start_matches(['/', '\\']).len())
        }
        _ => 0,
    };
    Cow::Owned(format!("{}***{}", &raw[..start], &raw[at..]))
}

/// Rule 7: `Some(why)` when the WHATWG parser changed the meaning of `raw`
/// (as opposed to normalising its spelling). Only for http(s) URLs that
/// parsed, without control characters or outer whitespace.
fn repair(raw: &str, url: &Url) -> Option<String> {
    if raw.contains('\\') {
        return Some(
            "must not contain backslashes; WHATWG URL parsers read them as \"/\", \
             Ironic and BMCs do not"
                .to_string(),
        );
    }
    let after_scheme = &raw[raw.find(':')? + 1..];
    if !after_scheme.starts_with("//") || after_scheme[2..].starts_with('/') {
        let scheme = url.scheme();
        return Some(format!(
            "must start with \"{scheme}://\" followed by the host; URL parsers disagree on what this means"
        ));
    }
    // Exactly two slashes and no backslash: the authority ends at `/`, `?` or `#`.
    let (authority, tail) = split_authority(raw);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_in = if host_port.starts_with('[') {
        host_port.find(']').map_or(host_port, |i| &host_port[..=i])
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };

    match url.host()? {
        Host::Ipv4(addr) => {
            if host_in != addr.to_string() {
                return Some(format!(
                    "host {} is read as the IPv4 address {addr} by WHATWG URL parsers but not by \
                     others; write the address as four decimal numbers",
                    go_quote(host_in)
                ));
            }
        }
        Host::Ipv6(addr) => {
            let inner = host_in.trim_start_matches('[').trim_end_matches(']');
            if inner.parse::<Ipv6Addr>().ok() != Some(addr) {
                return Some(format!(
                    "host {} is not a plain IPv6 address",
                    go_quote(host_in)
                ));
            }
        }
        Host::Domain(domain) => {
            if host_in.contains('%') {
                return Some(
                    "host must not be percent-encoded; WHATWG URL parsers decode it, others do not"
                        .to_string(),
                );
            }
            // ASCII hosts may differ only in case; non-ASCII hosts become
            // punycode (IDN), which is the same name.
            if host_in.is_ascii() && !host_in.eq_ignore_ascii_case(domain) {
                return Some(format!(
                    "host {} is read as {} by WHATWG URL parsers but not by others",
                    go_quote(host_in),
                    go_quote(domain)
                ));
            }
        }
    }

    // Path, query and fragment: equal once non-ASCII characters are
    // percent-encoded (IRI → URI) and an empty path is written as `/`.
    // (`CONTROLS` encodes exactly the non-ASCII bytes here: rule 1 already
    // refused control characters.)
    let expected = &url[Position::BeforePath..];
    let slash = if tail.starts_with('/') { "" } else { "/" };
    let normalised = format!("{slash}{}", utf8_percent_encode(tail, CONTROLS));
    if normalised != expected {
        return Some(format!(
            "WHATWG URL parsers change the path, query or fragment to {} (dot segments, \
             characters that must be percent-encoded); write the URL exactly as it should be fetched",
            go_quote(expected)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "spec.dataImage.url";
    const HINT: &str = "use credentialsName";

    fn messages(url: &str) -> Vec<String> {
        check_url(FIELD, Some(url), HINT)
            .errors
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }

    fn ok(url: &str) {
        let report = check_url(FIELD, Some(url), HINT);
        assert!(report.errors.is_empty(), "{url}: {:?}", report.errors);
    }

    fn denied(url: &str, needle: &str) {
        let msgs = messages(url);
        assert!(
            msgs.iter().any(|m| m.contains(needle)),
            "{url}: expected {needle:?} in {msgs:?}"
        );
    }

    #[test]
    fn accepts_plain_and_harmlessly_normalised_urls() {
        ok("http://192.0.2.20/images/config.iso");
        ok("https://images.example.com/config/worker-0.iso");
        ok("HTTPS://Images.Example.COM/a.iso");
        ok("https://images.example.com:8443/a.iso");
        ok("http://images.example.com:80/a.iso");
        ok("https://[2001:db8::10]:8443/a.iso");
        ok("https://[2001:DB8:0:0::10]/a.iso");
        ok("https://bücher.example/a.iso");
        ok("https://images.example.com/dätä.iso");
        ok("https://images.example.com/a%20b.iso?X-Amz-Signature=ab%2Fcd&x=1");
        ok("https://images.example.com");
        ok("https://images.example.com?sig=1");
        ok("http://[::ffff:192.0.2.1]/a.iso");
    }

    #[test]
    fn rule_1_empty_whitespace_control() {
        assert_eq!(
            check_url(FIELD, None, HINT).errors[0].message,
            "Required value"
        );
        assert_eq!(messages(""), ["Required value"]);
        denied(" http://h/a.iso", "whitespace");
        denied("http://h/a.iso\n", "whitespace");
        denied("http://h/a\t.iso", "control characters");
        denied("http://h/a\u{7f}.iso", "control characters");
    }

    #[test]
    fn rules_2_to_4_parse_scheme_host_port() {
        denied("images/a.iso", "absolute URL");
        denied("ftp://h/a.iso", "scheme must be http or https");
        denied("file:///a.iso", "scheme must be http or https");
        denied("HTTP:", "host must not be empty");
        denied(
            "http://h:65536/a.iso",
            "port must be a number from 1 to 65535",
        );
        denied("http://h:0/a.iso", "port must be a number from 1 to 65535");
        denied("http://h:abc/a.iso", "port must be a number");
        denied("http://[2001:db8::1/a.iso", "not a valid URL");
        denied("http://exa mple.com/a.iso", "not a valid URL");
    }

    #[test]
    fn rule_5_userinfo_is_denied_and_never_echoed() {
        let report = check_url(FIELD, Some("https://admin:s3cret@h/a.iso"), HINT);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(
            report.errors[0].message,
            "Invalid value: \"https://***@h/a.iso\": must not contain a user name or password; use credentialsName"
        );
        for url in [
            "http://@h/a.iso",
            "http://u@h/a.iso",
            "http:u:s3cret@h/a.iso",
            "ftp://u:s3cret@h/",
        ] {
            let msgs = messages(url);
            assert!(
                msgs.iter().any(|m| m.contains("user name or password")),
                "{url}: {msgs:?}"
            );
            assert!(
                msgs.iter().all(|m| !m.contains("s3cret")),
                "{url}: {msgs:?}"
            );
        }
        // A '/' inside the password makes the URL unparseable: still redacted.
        let msgs = messages("http://u:pa/ss@h/a.iso");
        assert!(msgs.iter().all(|m| !m.contains("pa/ss")), "{msgs:?}");
    }

    #[test]
    fn rule_6_length() {
        let long = format!("https://h/{}.iso", "a".repeat(MAX_URL_CHARS));
        let msgs = messages(&long);
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("must be at most 2048 characters (it has 2062)"),
            "{msgs:?}"
        );
        assert!(msgs[0].len() < 200);
        ok(&format!("https://h/{}.iso", "a".repeat(MAX_URL_CHARS - 14)));
    }

    #[test]
    fn rule_7_repairs_are_denied() {
        denied("http:///a.iso", "must start with \"http://\"");
        denied("http:/h/a.iso", "must start with \"http://\"");
        denied("http:h/a.iso", "must start with \"http://\"");
        denied("http://h\\a.iso", "backslashes");
        denied("http:\\\\h/a.iso", "backslashes");
        denied("http://h/a/../b.iso", "dot segments");
        denied("http://h/a/%2e%2E/b.iso", "dot segments");
        denied("http://h/a b.iso", "\"/a%20b.iso\"");
        denied("http://0x7f.1/a.iso", "IPv4 address 127.0.0.1");
        denied("http://017.0.0.1/a.iso", "IPv4 address 15.0.0.1");
        denied("http://1.2.3/a.iso", "IPv4");
        denied("http://h%41st/a.iso", "percent-encoded");
    }

    #[test]
    fn warnings_for_iso_suffix_and_fragment() {
        let r = check_url(FIELD, Some("https://h/a.ISO"), HINT);
        assert!(r.warnings.is_empty());
        let r = check_url(FIELD, Some("https://h/a.img"), HINT);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].starts_with("spec.dataImage.url: the path does not end in .iso"));
        let r = check_url(FIELD, Some("https://h/a.iso#part"), HINT);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("fragment"));
        // No warnings on a denied URL.
        assert!(
            check_url(FIELD, Some("ftp://h/a"), HINT)
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn echo_keeps_clean_urls_and_redacts_userinfo() {
        assert_eq!(
            echo_url(
                "http://h/a@b.iso",
                Url::parse("http://h/a@b.iso").ok().as_ref()
            ),
            "http://h/a@b.iso"
        );
        assert_eq!(echo_url("http://u:p@h/a.iso", None), "http://***@h/a.iso");
        assert_eq!(echo_url("http:u:p@h/a.iso", None), "http:***@h/a.iso");
        assert_eq!(echo_url("http://u:p/q@h/a.iso", None), "http://***@h/a.iso");
    }
}
