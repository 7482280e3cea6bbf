//! A strict parser of the Prometheus text exposition format (0.0.4), for the metrics tests.

use std::collections::BTreeMap;

/// One metric family of a parsed exposition.
#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: String,
    /// (sample name, labels, value)
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Family {
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found = self.samples.iter().find(|(n, l, _)| n == name && *l == want);
        found.unwrap_or_else(|| panic!("no sample {name}{want:?} in {self:?}")).2
    }
}

/// A strict parser of the Prometheus text exposition format 0.0.4: every line is a well-formed
/// `# HELP`, `# TYPE`, comment or sample; names and label names are valid; label values use
/// only the three escapes; a family's TYPE and HELP come once, before its samples, and its
/// samples are contiguous; no series repeats; counters are not negative; a histogram has
/// `le`-labelled cumulative buckets ending at `+Inf`, which equals its `_count`, and a `_sum`.
pub fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the last line does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name) = (words.next().unwrap_or(""), words.next());
            let rest = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = name.filter(|n| metric_name(n)).ok_or_else(|| fail("bad metric name"))?;
            if current.as_deref() != Some(name) && families.contains_key(name) {
                return Err(fail("a family's metadata after its samples or twice"));
            }
            let family = families.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            if keyword == "HELP" {
                if !family.help.is_empty() || rest.is_empty() {
                    return Err(fail("HELP twice or empty"));
                }
                check_escapes(rest, false).map_err(|e| fail(&e))?;
                family.help = rest.to_string();
            } else {
                let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !family.kind.is_empty() || !family.samples.is_empty() || !kinds.contains(&rest) {
                    return Err(fail("TYPE twice, after samples, or unknown"));
                }
                family.kind = rest.to_string();
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (name, labels, value) = sample(line).map_err(|e| fail(&e))?;
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|b| families.get(*b).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(&name)
            .to_string();
        if current.as_deref() != Some(base.as_str()) && families.contains_key(&base) {
            return Err(fail("the family's samples are not contiguous"));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(fail("a series repeats"));
        }
        let family = families.entry(base.clone()).or_default();
        if family.kind.is_empty() {
            return Err(fail("a sample without a TYPE"));
        }
        if family.kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(fail("a negative counter"));
        }
        current = Some(base);
        family.samples.push((name, labels, value));
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let bucket = format!("{name}_bucket");
    let mut previous: Option<(f64, f64)> = None;
    for (sample, labels, value) in family.samples.iter().filter(|s| s.0 == bucket) {
        let le = labels.get("le").ok_or(format!("{sample} without le"))?;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().map_err(|_| format!("le {le}"))?
        };
        if let Some((p_le, p_count)) = previous {
            if le <= p_le || *value < p_count {
                return Err(format!("{name}: buckets not ascending and cumulative at le={le}"));
            }
        }
        previous = Some((le, *value));
    }
    let count = family.value(&format!("{name}_count"), &[]);
    family.value(&format!("{name}_sum"), &[]);
    match previous {
        Some((le, inf)) if le == f64::INFINITY && inf == count => Ok(()),
        _ => Err(format!("{name}: the +Inf bucket is missing or differs from _count")),
    }
}

fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(name: &str) -> bool {
    metric_name(name) && !name.contains(':') && !name.starts_with("__")
}

/// Only `\\` and `\n` (and `\"` inside label values) may follow a backslash.
fn check_escapes(text: &str, quoted: bool) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\' | 'n') => {}
                Some('"') if quoted => {}
                other => return Err(format!("bad escape \\{other:?}")),
            }
        } else if c == '\n' || (quoted && c == '"') {
            return Err("unescaped character".into());
        }
    }
    Ok(())
}

type Sample = (String, BTreeMap<String, String>, f64);

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"").ok_or("bad label")?;
            if !label_name(label) || labels.contains_key(label) {
                return Err(format!("bad or repeated label name {label:?}"));
            }
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated label value")?;
            let raw = &after[..end];
            check_escapes(raw, true)?;
            let value = raw.replace("\\n", "\n").replace("\\\"", "\"").replace("\\\\", "\\");
            labels.insert(label.to_string(), value);
            inner = &after[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut fields = rest.strip_prefix(' ').ok_or("no space before the value")?.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

#[test]
fn the_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP m_total x\n# TYPE m_total counter\nm_total{a=\"q\\\"\"} 1\n";
    assert!(parse_exposition(good).is_ok());
    let bad = [
        "# TYPE m counter\nm 1",                           // no final newline
        "m 1\n",                                           // no TYPE
        "# TYPE m gauge\nm{a=\"x} 1\n",                    // unterminated
        "# TYPE m gauge\nm{a=\"\\t\"} 1\n",                // bad escape
        "# TYPE m gauge\nm one\n",                         // bad value
        "# TYPE m gauge\nm 1\n# TYPE n gauge\nn 1\nm 2\n", // not contiguous
        "# TYPE m gauge\nm 1\nm 1\n",                      // repeated series
        "# TYPE m counter\nm -1\n",                        // negative counter
        "# TYPE 1m gauge\n",                               // bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ];
    for text in bad {
        assert!(parse_exposition(text).is_err(), "accepted {text:?}");
    }
}
