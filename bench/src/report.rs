//! What a run found: `bench/results.json` (every figure at the top level,
//! with its target, spread and the raw rounds beside) and `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::{Value, json};

use crate::lag::LagRun;
use crate::reads::LoadRun;
use crate::replay::ReplayRun;
use crate::stats::Summary;

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// "≥ 0.5", "≤ 10", or empty for a figure reported without a target.
    pub target: String,
    pub met: Option<bool>,
    pub unit: String,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Figure {
    pub fn at_least(target: f64, summary: Summary, unit: &str) -> Figure {
        Figure {
            target: format!("≥ {target}"),
            met: Some(summary.median >= target),
            unit: unit.to_owned(),
            summary,
        }
    }

    pub fn at_most(target: f64, summary: Summary, unit: &str) -> Figure {
        Figure {
            target: format!("≤ {target}"),
            met: Some(summary.median <= target),
            unit: unit.to_owned(),
            summary,
        }
    }

    pub fn info(summary: Summary, unit: &str) -> Figure {
        Figure {
            target: String::new(),
            met: None,
            unit: unit.to_owned(),
            summary,
        }
    }
}

/// One Chronicle-vs-baseline round, as measured.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub chronicle: Value,
    pub baseline: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Dataset {
    pub events: u64,
    pub users: u64,
    pub posts: u64,
    pub comments: u64,
    pub published_posts: u64,
    pub search_corpus: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Details {
    pub replay: Vec<ReplayRun>,
    /// Writes made during each replay, and how soon they were visible.
    pub replay_writes: Vec<LagRun>,
    pub search: Vec<Comparison>,
    pub reads: Vec<Comparison>,
    pub reads_at_1000_rps: Vec<LoadRun>,
    /// Chronicle, raw Postgres (pgbench), cqrs-es.
    pub append: Vec<Comparison>,
    pub lag: Option<LagRun>,
    pub images: Vec<Comparison>,
    pub image_uploads: Option<crate::images::ReadyRun>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub date: String,
    pub commit: String,
    pub mode: String,
    pub seconds: f64,
    pub machine: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Results {
    pub run: Run,
    pub dataset: Dataset,
    pub figures: BTreeMap<String, Figure>,
    pub peak_rss_by_phase: BTreeMap<String, BTreeMap<String, f64>>,
    pub details: Details,
}

/// The figures the issue sets targets for, in the order BENCHMARKS.md shows them.
const ORDER: [&str; 15] = [
    "append_ratio_vs_raw_postgres",
    "append_ratio_vs_cqrs_es",
    "e2e_lag_p99_ms_at_500_cps",
    "graphql_read_ratio_vs_postgraphile",
    "graphql_read_p99_ms_at_1000_rps",
    "search_p99_ms_100k_posts",
    "search_speedup_vs_postgres_fts",
    "search_speedup_vs_postgres_fts_without_highlights",
    "replay_events_per_s",
    "replay_peak_rss_mib",
    "write_visibility_p99_ms_during_replay",
    "append_only_ratio_vs_cqrs_es",
    "image_renditions_per_s",
    "image_ratio_vs_vips",
    "image_upload_to_ready_p99_ms",
];

impl Results {
    pub fn figure(&mut self, key: &str, figure: Figure) {
        self.figures.insert(key.to_owned(), figure);
    }

    pub fn peak_rss(&mut self, phase: &str, peaks: BTreeMap<String, f64>) {
        self.peak_rss_by_phase.insert(phase.to_owned(), peaks);
    }

    /// Each service's highest peak over all phases.
    pub fn peak_rss_overall(&self) -> BTreeMap<String, f64> {
        let mut overall: BTreeMap<String, f64> = BTreeMap::new();
        for peaks in self.peak_rss_by_phase.values() {
            for (service, mib) in peaks {
                let entry = overall.entry(service.clone()).or_default();
                *entry = entry.max(*mib);
            }
        }
        overall
    }

    pub fn to_json(&self) -> Value {
        let mut root = serde_json::Map::new();
        for (key, figure) in &self.figures {
            root.insert(key.clone(), json!(round(figure.summary.median)));
        }
        root.insert("peak_rss_mib".into(), json!(self.peak_rss_overall()));
        root.insert("figures".into(), json!(self.figures));
        root.insert(
            "peak_rss_mib_by_phase".into(),
            json!(self.peak_rss_by_phase),
        );
        root.insert("dataset".into(), json!(self.dataset));
        root.insert("run".into(), json!(self.run));
        root.insert("details".into(), json!(self.details));
        Value::Object(root)
    }

    /// BENCHMARKS.md: method, machine, every figure, how to reproduce; the
    /// hand-written notes (profiles, optimizations) follow.
    pub fn to_markdown(&self, notes: &str) -> String {
        let mut out = String::new();
        let run = &self.run;
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Generated by `./dev bench` ({} mode) on {}, commit `{}`, in {:.0} s. \
             Regenerate with `./dev bench` (about 20 minutes; `./dev bench --quick` \
             is a smoke run of a few minutes whose figures are not comparable).\n",
            run.mode, run.date, run.commit, run.seconds
        );
        let _ = writeln!(out, "## Figures\n");
        let _ = writeln!(out, "| figure | target | median (min–max) | runs | met |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for key in ORDER {
            let Some(figure) = self.figures.get(key) else {
                let _ = writeln!(out, "| `{key}` | | not measured | | |");
                continue;
            };
            let decimals = if figure.summary.median >= 100.0 { 0 } else { 2 };
            let met = match figure.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| `{key}` | {} | {} {} | {} | {met} |",
                figure.target,
                figure.summary.display(decimals),
                figure.unit,
                figure.summary.runs.len()
            );
        }
        let _ = writeln!(out, "\nPeak resident memory per service (MiB), by phase:\n");
        let services = ["command-service", "projector", "query-service"];
        let _ = writeln!(out, "| phase | {} |", services.join(" | "));
        let _ = writeln!(out, "|---|---|---|---|");
        for (phase, peaks) in &self.peak_rss_by_phase {
            let cells: Vec<String> = services
                .iter()
                .map(|service| {
                    peaks
                        .get(*service)
                        .map_or("–".into(), |mib| format!("{mib:.0}"))
                })
                .collect();
            let _ = writeln!(out, "| {phase} | {} |", cells.join(" | "));
        }

        let data = &self.dataset;
        let _ = writeln!(out, "\n## Machine and data\n");
        for (key, value) in &run.machine {
            let _ = writeln!(out, "- {key}: {value}");
        }
        let _ = writeln!(
            out,
            "- Event store: {} events from the generator (`./dev seed`): {} users, {} posts \
             ({} published and visible), {} comments.\n- Search corpus: {} published posts, \
             the same rows in tantivy and in Postgres.",
            data.events,
            data.users,
            data.posts,
            data.published_posts,
            data.comments,
            data.search_corpus
        );
        let _ = writeln!(out, "\n## Rounds\n");
        self.rounds_markdown(&mut out);
        out.push('\n');
        out.push_str(notes);
        out
    }

    fn rounds_markdown(&self, out: &mut String) {
        let details = &self.details;
        for (index, replay) in details.replay.iter().enumerate() {
            let _ = writeln!(
                out,
                "- replay {}: {} events in {:.1} s ({:.0} events/s); per projection {}",
                index + 1,
                replay.events,
                replay.seconds,
                replay.events_per_second,
                replay
                    .projections
                    .iter()
                    .map(|(name, seconds)| format!("{name} {seconds:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(writes) = details.replay_writes.get(index) {
                let _ = writeln!(
                    out,
                    "  - writes during replay {}: {} at {:.1}/s, visible p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, never visible {}",
                    index + 1,
                    writes.acknowledged,
                    writes.achieved_commands_per_second,
                    writes.lag.p50_ms,
                    writes.lag.p99_ms,
                    writes.lag.max_ms,
                    writes.never_visible
                );
            }
        }
        for (index, round) in details.append.iter().enumerate() {
            let extra = |system: &str, field: &str| {
                round
                    .extra
                    .as_ref()
                    .and_then(|extra| extra[system][field].as_f64())
                    .unwrap_or(0.0)
            };
            let _ = writeln!(
                out,
                "- append round {}: Chronicle {:.0} commands/s (p99 {:.1} ms), the write path alone {:.0} commands/s (p99 {:.1} ms), raw Postgres {:.0} inserts/s, cqrs-es {:.0} commands/s",
                index + 1,
                round.chronicle["commands_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
                round.chronicle["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
                extra("write_path_alone", "commands_per_second"),
                round
                    .extra
                    .as_ref()
                    .and_then(|extra| extra["write_path_alone"]["latency"]["p99_ms"].as_f64())
                    .unwrap_or(0.0),
                round.baseline["raw_postgres_inserts_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
                extra("cqrs_es", "commands_per_second"),
            );
        }
        for (index, round) in details.reads.iter().enumerate() {
            let _ = writeln!(
                out,
                "- reads round {}: Chronicle {:.0} req/s (p99 {:.1} ms), PostGraphile {:.0} req/s (p99 {:.1} ms)",
                index + 1,
                round.chronicle["requests_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
                round.chronicle["p99_ms"].as_f64().unwrap_or(0.0),
                round.baseline["requests_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
                round.baseline["p99_ms"].as_f64().unwrap_or(0.0),
            );
        }
        for (index, run) in details.reads_at_1000_rps.iter().enumerate() {
            let _ = writeln!(
                out,
                "- reads at 1000 req/s, run {}: achieved {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                index + 1,
                run.requests_per_second,
                run.p50_ms,
                run.p99_ms
            );
        }
        for (index, round) in details.search.iter().enumerate() {
            let mean = |value: &Value| value["latency"]["mean_ms"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "- search round {}: Chronicle p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms ({} of {} queries with hits); \
                 Postgres FTS mean {:.2} ms with highlights, {:.2} ms without",
                index + 1,
                round.chronicle["latency"]["p50_ms"].as_f64().unwrap_or(0.0),
                round.chronicle["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
                mean(&round.chronicle),
                round.chronicle["queries_with_hits"],
                round.chronicle["latency"]["count"],
                mean(&round.baseline),
                round.extra.as_ref().map_or(0.0, mean),
            );
        }
        if let Some(lag) = &details.lag {
            let _ = writeln!(
                out,
                "- lag (median of three runs): {:.0} commands/s for {:.0} s, {} acknowledged, {} never visible; \
                 ack → read model p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; of which ack → on the bus \
                 p50 {:.1} ms, p99 {:.1} ms and bus → read model p50 {:.1} ms, p99 {:.1} ms",
                lag.achieved_commands_per_second,
                lag.seconds,
                lag.acknowledged,
                lag.never_visible,
                lag.lag.p50_ms,
                lag.lag.p99_ms,
                lag.lag.max_ms,
                lag.to_bus.p50_ms,
                lag.to_bus.p99_ms,
                lag.bus_to_visible.p50_ms,
                lag.bus_to_visible.p99_ms
            );
        }
        for (index, round) in details.images.iter().enumerate() {
            let field = |side: &Value, name: &str| side[name].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "- images round {}: the image worker {:.1} renditions/s ({} renditions of {} photos in {:.1} s), \
                 vipsthumbnail {:.1} renditions/s ({:.1} s)",
                index + 1,
                field(&round.chronicle, "renditions_per_second"),
                round.chronicle["renditions"],
                round.chronicle["images"],
                field(&round.chronicle, "seconds"),
                field(&round.baseline, "renditions_per_second"),
                field(&round.baseline, "seconds"),
            );
        }
        if let Some(uploads) = &details.image_uploads {
            let _ = writeln!(
                out,
                "- image uploads: {} at {:.1}/s, upload → READY p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {} failed",
                uploads.uploads,
                uploads.uploads_per_second,
                uploads.upload_to_ready.p50_ms,
                uploads.upload_to_ready.p99_ms,
                uploads.upload_to_ready.max_ms,
                uploads.failed
            );
        }
    }
}

fn round(value: f64) -> f64 {
    if value.abs() >= 100.0 {
        value.round()
    } else {
        (value * 1000.0).round() / 1000.0
    }
}
