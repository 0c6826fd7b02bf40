//! The agent's metrics endpoint as a scraper sees it: a plain HTTP GET, and a parser of
//! the Prometheus/OpenMetrics text strict enough to catch a broken exposition.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    time::Duration,
};

/// `GET /metrics` from `addr`, which must answer 200; samples by `name{labels}`.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "GET /metrics: {body}");
    parse_exposition(&body)
}

/// GET `path` from `addr` (HTTP/1.1, connection closed): status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    // hyper sends small bodies with a content-length; large ones may be chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Parse a Prometheus/OpenMetrics text exposition strictly enough to catch a broken
/// one: every sample line is `name{labels} value`, every family has HELP and TYPE,
/// and the text ends with `# EOF`. Returns samples by `name{labels}`.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF terminator:\n{text}");
    let mut typed = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line == "# EOF" {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let name = series.split('{').next().unwrap();
        if series.contains('{') {
            assert!(series.ends_with('}'), "unterminated labels: {line:?}");
            let labels = &series[name.len() + 1..series.len() - 1];
            for pair in split_labels(labels) {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("label without `=`: {line:?}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name in {line:?}"
                );
                assert!(
                    v.starts_with('"') && v.ends_with('"'),
                    "unquoted label value in {line:?}"
                );
            }
        }
        let family = ["_total", "_created", "_info"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.contains(*f))
            .unwrap_or(name);
        assert!(
            typed.contains(family),
            "sample of an untyped family: {line:?}"
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a number: {line:?}"));
        samples.insert(series.to_string(), v);
    }
    samples
}

/// `a="x",b="y,z"` -> `a="x"`, `b="y,z"`: commas inside quoted values do not split.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            '\\' if quoted && !escaped => escaped = true,
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

/// The sum of the samples of `name` whose labels include every `want` pair.
pub fn sample_sum(samples: &BTreeMap<String, f64>, name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) || k.as_str() == name)
        .filter(|(k, _)| {
            want.iter()
                .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn samples_are_read_by_series_and_summed_by_label() {
        let text = "# HELP x_total calls\n# TYPE x counter\nx_total{a=\"1\",b=\"p,q\"} 2\nx_total{a=\"1\",b=\"r\"} 3\nx_total{a=\"2\",b=\"r\"} 5\n# EOF\n";
        let samples = parse_exposition(text);
        assert_eq!(samples["x_total{a=\"1\",b=\"p,q\"}"], 2.0);
        assert_eq!(sample_sum(&samples, "x_total", &[("a", "1")]), 5.0);
        assert_eq!(sample_sum(&samples, "x_total", &[("b", "r")]), 8.0);
    }

    #[test]
    #[should_panic(expected = "no # EOF terminator")]
    fn an_exposition_without_eof_is_refused() {
        parse_exposition("# TYPE x gauge\nx 1\n");
    }

    #[test]
    #[should_panic(expected = "sample of an untyped family")]
    fn a_sample_without_type_is_refused() {
        parse_exposition("y 1\n# EOF\n");
    }
}
