//! Go-style durations (`10s`, `1m30s`, `500ms`), as Kubernetes users write
//! them: the one grammar of the API server's `?timeout=` query parameter and
//! of every duration flag of every subcommand.

use std::time::Duration;

/// Parses a Go `time.Duration` string without sign (`0`, `10s`, `1.5s`,
/// `1h2m3s`, `250ms`, `10us`, `10µs`, `5ns`).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut rest = text;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("invalid duration {input:?}: expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid duration {input:?}: bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {input:?}: missing unit (e.g. 10s)"
                ));
            }
            unit => return Err(format!("invalid duration {input:?}: unknown unit {unit:?}")),
        };
        rest = &rest[unit_len..];
        total_nanos += number * nanos_per_unit;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(format!("invalid duration {input:?}: too large"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Like [`parse_duration`], for flags where zero makes no sense (timeouts,
/// intervals): `0` is refused with a clear message.
pub fn parse_positive_duration(input: &str) -> Result<Duration, String> {
    let duration = parse_duration(input)?;
    if duration.is_zero() {
        return Err(format!("{input:?} must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn zero_only_where_it_makes_sense() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(
            parse_positive_duration("0")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "s", "10x", "-1s", "1..2s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
