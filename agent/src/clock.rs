//! Wall-clock times as sysfence writes them: Unix milliseconds, RFC 3339, and spans
//! for people.

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// A time in Unix milliseconds (0 before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `3h 2m`, `45s`, `1.2s`: a span for people.
pub fn human_span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..10 => format!("{:.1}s", ms as f64 / 1000.0),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `2026-11-29T01:02:03.456Z` from unix milliseconds.
pub fn iso_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms as i64);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // RFC 3339 drops a zero fraction; reports line up better with it always there.
    match text.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.000Z"),
        _ => text,
    }
}

/// Unix milliseconds of an RFC 3339 time (`2026-11-29T01:02:03.456789Z`, or with a
/// `+01:00` offset), as tracing's JSON logs write `timestamp`.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ms = 1_795_914_123_456;
        let text = iso_ms(ms);
        assert_eq!(parse_rfc3339_ms(&text), Some(ms));
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T00:00:01.5Z"),
            Some(1500),
            "fractions shorter than ms"
        );
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T01:00:00.000123+01:00"),
            Some(0)
        );
        assert_eq!(parse_rfc3339_ms("2026-02-30"), None);
        assert_eq!(human_span(3 * 3600 * 1000 + 120_000), "3h 2m");
        assert_eq!(human_span(45_000), "45s");
    }
}
