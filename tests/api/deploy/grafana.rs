//! `docs/grafana.json` is imported into Grafana as it is. A query that names
//! a series `/metrics` does not have, or a label that series does not
//! carry, draws "No data" forever instead of failing anywhere, so these
//! tests read every query of the dashboard and hold it against the
//! exposition of a real server after real traffic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::fake_upstream::{FakeUpstream, Reply};

const DASHBOARD: &str = include_str!("../../../docs/grafana.json");

/// The data source every panel uses: the one Grafana asks for on import.
const DATA_SOURCE: &str = "${DS_PROMETHEUS}";

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).unwrap_or_else(|error| panic!("docs/grafana.json: {error}"))
}

/// Every panel, with those inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    top.iter()
        .flat_map(|panel| {
            let nested = panel["panels"].as_array().map_or(&[][..], Vec::as_slice);
            std::iter::once(panel).chain(nested)
        })
        .collect()
}

/// One query of the dashboard: its panel's title, the PromQL and the
/// legend template.
struct Query {
    panel: String,
    expr: String,
    legend: String,
}

fn queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default();
            let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
            targets.iter().map(move |target| Query {
                panel: title.to_owned(),
                expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                legend: target["legendFormat"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect()
}

/// A label matcher: `part="upstream"`, `outcome!="ok"`, `route=~"/v1.*"`.
struct Matcher {
    label: String,
    operator: String,
    value: String,
}

/// Reads `name="value"` pairs from just after a `{` to its `}`; values may
/// hold braces and commas (`route="/api/chat/{stream_id}"`). Returns them
/// and what follows the `}`.
fn matchers(text: &str) -> (Vec<Matcher>, &str) {
    let mut found = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return (found, after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("an unclosed label set: {text:?}"));
        let (label, after_name) = rest.split_at(name_end);
        let after_name = after_name.trim_start();
        let operator_end = after_name
            .find('"')
            .unwrap_or_else(|| panic!("a label without a quoted value: {text:?}"));
        let operator = after_name[..operator_end].trim();
        assert!(
            ["=", "!=", "=~", "!~"].contains(&operator),
            "no operator after {label:?} in {text:?}"
        );
        let mut value = String::new();
        let mut chars = after_name[operator_end + 1..].char_indices();
        let close = loop {
            match chars.next() {
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("an unclosed value in {text:?}"),
            }
        };
        found.push(Matcher {
            label: label.to_owned(),
            operator: operator.to_owned(),
            value,
        });
        rest = &after_name[operator_end + 1 + close + 1..];
    }
}

/// What `/metrics` says: each family's `# TYPE`, and for each sample name
/// every label its samples carry with the values seen.
struct Exposition {
    types: BTreeMap<String, String>,
    series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("a TYPE line without a type: {line:?}"));
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = series.entry(line[..name_end].to_owned()).or_default();
            if let Some(set) = line[name_end..].strip_prefix('{') {
                for matcher in matchers(set).0 {
                    labels
                        .entry(matcher.label)
                        .or_default()
                        .insert(matcher.value);
                }
            }
        }
        Self { types, series }
    }

    /// Whether `/metrics` has `name`: as samples, or as a family it
    /// declares (whose labelled series appear only after their first
    /// event), a histogram's `_bucket`, `_sum` and `_count` included.
    fn has(&self, name: &str) -> bool {
        let histogram_part = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| self.types.get(base).is_some_and(|kind| kind == "histogram"))
        });
        self.series.contains_key(name) || self.types.contains_key(name) || histogram_part
    }

    /// The values `label` takes on the samples of `name`, if any carries it.
    fn values(&self, name: &str, label: &str) -> Option<&BTreeSet<String>> {
        self.series.get(name)?.get(label)
    }
}

/// What one PromQL expression asks for: the selectors of tokenrelay's
/// series and the labels it groups by.
#[derive(Default)]
struct Asked {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

/// Reads the metric names (`tokenrelay_…`), their label matchers, and the
/// labels of `by`, `without`, `on` and `ignoring` from `expr`. Strings,
/// range selectors and Grafana's `$variables` are skipped.
fn asked(expr: &str) -> Asked {
    let mut asked = Asked::default();
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let end = rest[1..]
                .find('"')
                .unwrap_or_else(|| panic!("an unclosed string in {expr:?}"));
            rest = &rest[end + 2..];
        } else if c == '[' {
            let end = rest
                .find(']')
                .unwrap_or_else(|| panic!("an unclosed range in {expr:?}"));
            rest = &rest[end + 1..];
        } else if c == '$' || c.is_ascii_alphabetic() || c == '_' {
            let end = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(rest.len(), |end| end + 1);
            let word = &rest[..end];
            rest = rest[end..].trim_start();
            if word.starts_with("tokenrelay_") {
                let found = match rest.strip_prefix('{') {
                    Some(set) => {
                        let (found, after) = matchers(set);
                        rest = after;
                        found
                    }
                    None => Vec::new(),
                };
                asked.selectors.push((word.to_owned(), found));
            } else if ["by", "without", "on", "ignoring"].contains(&word) {
                let list = rest
                    .strip_prefix('(')
                    .unwrap_or_else(|| panic!("`{word}` without a label list in {expr:?}"));
                let (labels, after) = list
                    .split_once(')')
                    .unwrap_or_else(|| panic!("an unclosed label list in {expr:?}"));
                asked.grouping.extend(
                    labels
                        .split(',')
                        .map(str::trim)
                        .filter(|label| !label.is_empty())
                        .map(str::to_owned),
                );
                rest = after;
            }
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    asked
}

/// The labels a legend template shows: `{{route}} {{outcome}}`.
fn legend_labels(legend: &str) -> Vec<&str> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(label, _)| label.trim()))
        .collect()
}

/// Everything in the dashboard's queries that `/metrics` (`exposition`)
/// does not have, one line each.
fn missing(dashboard: &Value, exposition: &Exposition) -> Vec<String> {
    let mut missing = Vec::new();
    for query in queries(dashboard) {
        let panel = &query.panel;
        let asked = asked(&query.expr);
        if asked.selectors.is_empty() {
            missing.push(format!("{panel}: no tokenrelay series in {:?}", query.expr));
        }
        for (name, found) in &asked.selectors {
            if !exposition.has(name) {
                missing.push(format!("{panel}: /metrics has no {name}"));
                continue;
            }
            for matcher in found {
                match exposition.values(name, &matcher.label) {
                    None => {
                        missing.push(format!("{panel}: {name} has no label {:?}", matcher.label))
                    }
                    // A regular expression may rightly match nothing yet.
                    Some(values)
                        if ["=", "!="].contains(&matcher.operator.as_str())
                            && !values.contains(&matcher.value) =>
                    {
                        missing.push(format!(
                            "{panel}: {name}'s {} is never {:?}, only {values:?}",
                            matcher.label, matcher.value
                        ));
                    }
                    Some(_) => {}
                }
            }
            // The dashboard's expressions aggregate one series each, so a
            // grouping label must be on every series the expression names.
            for label in &asked.grouping {
                if exposition.values(name, label).is_none() {
                    missing.push(format!(
                        "{panel}: {name} has no label {label:?} to group by"
                    ));
                }
            }
        }
        // An aggregation keeps only the labels it groups by.
        for label in legend_labels(&query.legend) {
            let kept = if asked.grouping.is_empty() {
                asked
                    .selectors
                    .iter()
                    .all(|(name, _)| exposition.values(name, label).is_some())
            } else {
                asked.grouping.iter().any(|grouped| grouped == label)
            };
            if !kept {
                missing.push(format!(
                    "{panel}: the legend shows {{{{{label}}}}}, which {:?} does not keep",
                    query.expr
                ));
            }
        }
    }
    missing
}

/// A proxy with two upstreams, after traffic that creates the series that
/// appear only after their first event: `a` refuses, so the answer fails
/// over to `b`, counting `a`'s error by upstream and the failover.
async fn exposition_after_traffic() -> Exposition {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.push(Reply::status(
        503,
        json!({"error": {"message": "overloaded"}}),
    ));
    b.push(Reply::tokens(&["from ", "b"]));
    let file = format!(
        "[upstreams.a]\nbase_url = \"{}\"\nretries = 0\n\
         [upstreams.b]\nbase_url = \"{}\"\n\
         [models.chat]\ntargets = [\"a/m\", \"b/m\"]\n",
        a.base_url(),
        b.base_url()
    );
    let app = crate::routing::configured(a, "grafana", &file, &[]).await;
    let transcript = app.chat(&json!({"model": "chat", "prompt": "hi"})).await;
    assert_eq!(transcript.text_of("token"), "from b", "{}", transcript.text);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    Exposition::parse(&response.text().await.unwrap_or_default())
}

#[test]
fn the_dashboard_imports_with_one_prometheus_data_source() {
    let dashboard = dashboard();

    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        inputs.iter().any(|input| input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].to_string()),
            "{title}: a repeated id"
        );
        let place = &panel["gridPos"];
        let right = place["x"].as_u64().unwrap_or(99) + place["w"].as_u64().unwrap_or(99);
        assert!(right <= 24, "{title}: wider than the dashboard");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], DATA_SOURCE, "{title}");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATA_SOURCE, "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|expr| !expr.is_empty()),
                "{title}"
            );
        }
    }
}

#[tokio::test]
async fn every_query_names_series_and_labels_that_metrics_exposes() {
    let exposition = exposition_after_traffic().await;

    let missing = missing(&dashboard(), &exposition);

    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[tokio::test]
async fn every_metric_family_has_a_panel() {
    let exposition = exposition_after_traffic().await;
    let charted: BTreeSet<String> = queries(&dashboard())
        .iter()
        .flat_map(|query| asked(&query.expr).selectors)
        .map(|(name, _)| name)
        .collect();

    for family in exposition.types.keys() {
        let shown = |name: &String| {
            name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|part| *name == format!("{family}{part}"))
        };
        assert!(charted.iter().any(shown), "no panel shows {family}");
    }
}

#[test]
fn the_reader_catches_a_series_a_label_or_a_value_that_is_not_there() {
    let exposition = Exposition::parse(
        "# TYPE tokenrelay_requests_total counter\n\
         tokenrelay_requests_total{route=\"/api/chat/{stream_id}/events\",outcome=\"ok\"} 1\n\
         # TYPE tokenrelay_time_to_first_token_seconds histogram\n\
         tokenrelay_time_to_first_token_seconds_bucket{part=\"proxy\",le=\"+Inf\"} 1\n",
    );
    let query = |expr: &str, legend: &str| json!({"panels": [{"title": "p", "targets": [{"expr": expr, "legendFormat": legend}]}]});

    let fine = [
        query(
            "sum by (route, outcome) (rate(tokenrelay_requests_total[$__rate_interval]))",
            "{{route}} {{outcome}}",
        ),
        query(
            "histogram_quantile(0.9, sum by (le) (rate(tokenrelay_time_to_first_token_seconds_bucket{part=\"proxy\"}[5m])))",
            "p90",
        ),
        query(
            "sum(rate(tokenrelay_time_to_first_token_seconds_count[5m]))",
            "",
        ),
    ];
    let wrong = [
        query("sum(rate(tokenrelay_request_total[5m]))", ""),
        query(
            "sum by (upstream) (rate(tokenrelay_requests_total[5m]))",
            "",
        ),
        query(
            "sum(rate(tokenrelay_requests_total{outcome=\"fine\"}[5m]))",
            "",
        ),
        query(
            "sum by (route) (rate(tokenrelay_requests_total[5m]))",
            "{{outcome}}",
        ),
        query(
            "sum(rate(tokenrelay_time_to_first_token_seconds_buckets[5m]))",
            "",
        ),
        query("sum(rate(node_cpu_seconds_total[5m]))", ""),
    ];

    for dashboard in fine {
        assert_eq!(missing(&dashboard, &exposition), Vec::<String>::new());
    }
    for dashboard in wrong {
        assert_eq!(missing(&dashboard, &exposition).len(), 1, "{dashboard}");
    }
}
