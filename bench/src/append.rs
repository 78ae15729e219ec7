//! Command throughput: `CreatePost` (one event per command) sent by N
//! concurrent clients to a command API, and the raw-Postgres baseline
//! (single-row insert transactions into a table indexed like the store).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chronicle_schema::{Command, CommandEnvelope};
use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use uuid::Uuid;

use crate::generator::Words;
use crate::stats::{Latencies, Percentiles};

/// A post's content to create, realistic in length.
#[derive(Clone, Debug)]
pub struct Draft {
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
}

pub fn drafts(count: usize, seed: u64) -> Vec<Draft> {
    let words = Words::new();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|index| Draft {
            title: words.title(&mut rng),
            body: words.body(&mut rng),
            tags: vec![format!("tag-{}", index % 7)],
        })
        .collect()
}

/// A command API and how each client authenticates to it.
#[derive(Clone)]
pub struct CommandApi {
    http: reqwest::Client,
    endpoint: String,
    /// One per client: the service credential and that client's user token.
    headers: Arc<Vec<HeaderMap>>,
    drafts: Arc<Vec<Draft>>,
    sequence: Arc<AtomicU64>,
}

/// What a command API acknowledged.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub stream_id: Uuid,
}

impl CommandApi {
    /// `bearers`: a user access token per client (none for the baseline).
    pub fn new(
        base_url: &str,
        service_token: &str,
        bearers: &[String],
        drafts: Vec<Draft>,
    ) -> CommandApi {
        let headers = bearers
            .iter()
            .map(|bearer| {
                let mut headers = HeaderMap::new();
                headers.insert(
                    "x-service-token",
                    HeaderValue::from_str(service_token).expect("a header-safe token"),
                );
                headers.insert("x-client-address", HeaderValue::from_static("127.0.0.1"));
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {bearer}"))
                        .expect("a JWT is header-safe"),
                );
                headers
            })
            .collect();
        CommandApi {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain client builds"),
            endpoint: format!("{}/v1/commands", base_url.trim_end_matches('/')),
            headers: Arc::new(headers),
            drafts: Arc::new(drafts),
            sequence: Arc::default(),
        }
    }

    /// The same clients, sending to another instance of the API.
    pub fn at(&self, base_url: &str) -> CommandApi {
        CommandApi {
            endpoint: format!("{}/v1/commands", base_url.trim_end_matches('/')),
            ..self.clone()
        }
    }

    pub fn clients(&self) -> usize {
        self.headers.len()
    }

    /// Creates a post as client `client`; titles are unique (slugs derive from them).
    pub async fn create_post(&self, client: usize) -> anyhow::Result<Ack> {
        let number = self.sequence.fetch_add(1, Ordering::Relaxed);
        let draft = &self.drafts[number as usize % self.drafts.len()];
        let command_id = Uuid::now_v7();
        let envelope = CommandEnvelope {
            command_id,
            correlation_id: command_id,
            idempotency_key: None,
            command: Command::CreatePost {
                title: format!("{} {number}", draft.title),
                body: draft.body.clone(),
                tags: Some(draft.tags.clone()),
                slug: None,
            },
        };
        let response = self
            .http
            .post(&self.endpoint)
            .headers(self.headers[client % self.headers.len()].clone())
            .json(&envelope)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("{status}: {}", response.text().await.unwrap_or_default());
        }
        Ok(response.json().await?)
    }
}

/// What a closed-loop run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub commands_per_second: f64,
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Percentiles,
}

/// Every client sends its next command as soon as the last one is
/// acknowledged, for `warmup` (not counted) and then `duration`.
pub async fn closed_loop(api: &CommandApi, warmup: Duration, duration: Duration) -> Throughput {
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + duration;
    let tasks: Vec<_> = (0..api.clients())
        .map(|client| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let (mut completed, mut errors, mut first_error) = (0u64, 0u64, None);
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let result = api.create_post(client).await;
                    if sent < measure_from {
                        continue;
                    }
                    match result {
                        Ok(_) => {
                            completed += 1;
                            latencies.record(sent.elapsed());
                        }
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                (latencies, completed, errors, first_error)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let (mut completed, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let (latencies, done, failed, error) = task.await.expect("a load task never panics");
        all.merge(&latencies);
        completed += done;
        errors += failed;
        first_error = first_error.or(error);
    }
    // Commands in flight at the end finish after `until`: count by the full window.
    let elapsed = (Instant::now() - measure_from).as_secs_f64();
    Throughput {
        commands_per_second: completed as f64 / elapsed,
        completed,
        errors,
        first_error,
        latency: all.percentiles(),
    }
}

/// The raw baseline's table: `event_store.events`' columns, defaults and
/// every index, in a schema of its own.
pub async fn create_raw_table(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bench_raw CASCADE;
         CREATE SCHEMA bench_raw;
         CREATE TABLE bench_raw.events (LIKE event_store.events INCLUDING ALL);",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A pgbench script: one single-row insert transaction (autocommit) per run,
/// with a payload of the size `CreatePost` appends.
pub fn raw_insert_script(draft: &Draft) -> String {
    let payload = serde_json::json!({
        "authorId": Uuid::now_v7(),
        "authorHandle": "bench-author",
        "slug": "a-realistic-slug",
        "title": draft.title,
        "body": draft.body,
        "tags": draft.tags,
    })
    .to_string()
    .replace('\'', "''");
    // pgbench substitutes `:name`: the JSON has a colon only before `"`, `[` or `{`.
    assert!(
        !payload
            .as_bytes()
            .windows(2)
            .any(|pair| pair[0] == b':' && (pair[1].is_ascii_alphanumeric() || pair[1] == b'_')),
        "the payload must not look like a pgbench variable"
    );
    format!(
        "INSERT INTO bench_raw.events (event_id, stream_id, stream_type, version, event_type, \
         schema_version, payload, command_id, correlation_id, causation_id, actor_id, metadata) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'post', 1, 'PostCreated', 2, '{payload}', \
         gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), '{{}}');\n"
    )
}

/// Runs pgbench and answers its transactions per second.
pub async fn pgbench(
    pgbench: &Path,
    database_url: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let output = tokio::process::Command::new(pgbench)
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={clients}"))
        .arg("--jobs=2")
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--file={}", script.display()))
        .arg(database_url)
        .output()
        .await
        .context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let failed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("0");
    if failed != "0" {
        bail!("pgbench transactions failed: {stdout}");
    }
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|tps| tps.parse().ok())
        })
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
}
