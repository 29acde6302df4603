//! Which text format a scrape gets, chosen from its `Accept` header as Prometheus' client_golang
//! does: OpenMetrics 1.0 when that ranks first among the formats we offer, else the Prometheus
//! text format 0.0.4 (also for `*/*`, no header, or anything unknown). The metrics are rendered
//! once, as OpenMetrics, and rewritten for 0.0.4: counters are declared under their `_total`
//! sample name, `# UNIT` and `# EOF` lines go, help text loses the OpenMetrics-only escapes.

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One media range of an `Accept` header.
struct Range<'a> {
    kind: &'a str,
    version: Option<&'a str>,
    q: f32,
    /// 0 for `*/*`, 1 for `type/*`, 2 for a full type: more specific ranks first at equal q.
    specificity: u8,
}

fn parse_range(item: &str) -> Option<Range<'_>> {
    let mut parts = item.split(';').map(str::trim);
    let kind = parts.next().filter(|k| k.contains('/'))?;
    let (mut version, mut q) = (None, 1.0);
    for p in parts {
        let Some((name, value)) = p.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "version" => version = Some(value),
            "q" => q = value.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q))?,
            _ => {}
        }
    }
    let specificity = match kind.split_once('/') {
        Some(("*", _)) => 0,
        Some((_, "*")) => 1,
        _ => 2,
    };
    Some(Range { kind, version, q, specificity })
}

/// The format for an `Accept` header (`None`: no header).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let mut ranges: Vec<Range<'_>> = accept.split(',').filter_map(|i| parse_range(i.trim())).filter(|r| r.q > 0.0).collect();
    // Stable: at equal rank the header's order stands.
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q).then(b.specificity.cmp(&a.specificity)));
    for r in ranges {
        let kind = r.kind.to_ascii_lowercase();
        if kind == "text/plain" && matches!(r.version, None | Some("0.0.4")) {
            return Format::Text;
        }
        if kind == "application/openmetrics-text" && matches!(r.version, None | Some("1.0.0") | Some("0.0.1")) {
            return Format::OpenMetrics;
        }
    }
    Format::Text
}

/// The OpenMetrics text `render` gives, in the format asked for.
pub fn encode(openmetrics: String, format: Format) -> String {
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Text => to_text_004(&openmetrics),
    }
}

/// OpenMetrics text as Prometheus text format 0.0.4.
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // HELP precedes TYPE in a family; its name depends on the type, so it waits for it.
    let mut help: Option<(&str, String)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample_name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                "gaugehistogram" => (name.to_owned(), "histogram"),
                "stateset" => (name.to_owned(), "gauge"),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {sample_name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {sample_name} {kind}\n"));
        } else if line.starts_with("# ") {
            // `# UNIT` and `# EOF` have no 0.0.4 counterpart.
        } else if !line.is_empty() {
            let sample = line.split_once(" # {").map_or(line, |(s, _)| s);
            let name = sample.split(['{', ' ']).next().unwrap_or("");
            if name.ends_with("_created") {
                continue;
            }
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_2_42: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn negotiates_as_client_golang() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some(PROMETHEUS_2_42)), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;q=0.9, application/openmetrics-text; version=1.0.0")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.3")), Format::Text);
        // Versions we do not speak, q=0 and rubbish fall through to the default.
        assert_eq!(negotiate(Some("application/openmetrics-text;version=2.0.0")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
        assert_eq!(negotiate(Some("garbage;;;,=")), Format::Text);
        assert_eq!(negotiate(Some("application/json, application/openmetrics-text;q=0.5")), Format::OpenMetrics);
    }

    #[test]
    fn counters_are_declared_under_their_sample_names_in_text_004() {
        let om = "# HELP gatewayd_failures Failures, by \\\"kind\\\".\n# TYPE gatewayd_failures counter\ngatewayd_failures_total{kind=\"x\"} 1\ngatewayd_failures_created{kind=\"x\"} 1.0\n\
                  # HELP gatewayd_call_setup_seconds Setup.\n# TYPE gatewayd_call_setup_seconds histogram\n# UNIT gatewayd_call_setup_seconds seconds\n\
                  gatewayd_call_setup_seconds_sum 0.5\ngatewayd_call_setup_seconds_count 1\ngatewayd_call_setup_seconds_bucket{le=\"+Inf\"} 1 # {id=\"a\"} 1\n\
                  # HELP gatewayd_calls_active Calls.\n# TYPE gatewayd_calls_active gauge\ngatewayd_calls_active 2\n# EOF\n";
        let text = to_text_004(om);
        assert_eq!(
            text,
            "# HELP gatewayd_failures_total Failures, by \"kind\".\n# TYPE gatewayd_failures_total counter\ngatewayd_failures_total{kind=\"x\"} 1\n\
             # HELP gatewayd_call_setup_seconds Setup.\n# TYPE gatewayd_call_setup_seconds histogram\n\
             gatewayd_call_setup_seconds_sum 0.5\ngatewayd_call_setup_seconds_count 1\ngatewayd_call_setup_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP gatewayd_calls_active Calls.\n# TYPE gatewayd_calls_active gauge\ngatewayd_calls_active 2\n"
        );
    }
}
