//! GraphQL reads: a post with its author and comment count, from Chronicle's
//! query-service and from PostGraphile serving the same read tables. Load by
//! oha, each request for one of many published posts (one body per line).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const CHRONICLE_QUERY: &str =
    "query($id: ID!) { post(id: $id) { id title author { handle displayName } commentCount } }";
pub const POSTGRAPHILE_QUERY: &str = "query($id: UUID!) { postById(id: $id) { id title userByAuthorId { handle displayName } commentCount } }";

/// Published posts to read, and the request bodies for both servers.
pub struct ReadWorkload {
    pub post_ids: Vec<Uuid>,
    pub chronicle_bodies: PathBuf,
    pub postgraphile_bodies: PathBuf,
}

impl ReadWorkload {
    pub async fn prepare(pool: &PgPool, dir: &Path, posts: i64) -> anyhow::Result<ReadWorkload> {
        let post_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM read.posts
             WHERE public
             ORDER BY md5(id::text) LIMIT $1",
        )
        .bind(posts)
        .fetch_all(pool)
        .await?;
        if post_ids.is_empty() {
            bail!("no published posts to read");
        }
        let write = |name: &str, query: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            let lines: Vec<String> = post_ids
                .iter()
                .map(|id| json!({"query": query, "variables": {"id": id}}).to_string())
                .collect();
            std::fs::write(&path, lines.join("\n") + "\n")?;
            Ok(path)
        };
        Ok(ReadWorkload {
            chronicle_bodies: write("chronicle-reads.jsonl", CHRONICLE_QUERY)?,
            postgraphile_bodies: write("postgraphile-reads.jsonl", POSTGRAPHILE_QUERY)?,
            post_ids,
        })
    }
}

/// PostGraphile infers relations from foreign keys; the read tables have
/// none (projections are rebuilt in bulk), so a smart comment declares the
/// one this query follows, as PostGraphile's documentation recommends.
pub async fn declare_relations_for_postgraphile(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "COMMENT ON TABLE read.posts IS E'@foreignKey (author_id) references read.users (id)'",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Checks that both servers answer the workload's first request with the post.
pub async fn check_answers(url: &str, body_file: &Path, field: &str) -> anyhow::Result<()> {
    let first = std::fs::read_to_string(body_file)?
        .lines()
        .next()
        .context("an empty body file")?
        .to_owned();
    let response: Value = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(first)
        .send()
        .await?
        .json()
        .await?;
    if response["data"][field]["title"].as_str().is_none() {
        bail!("{url} did not answer the read: {response}");
    }
    Ok(())
}

/// One oha run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LoadRun {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub success_rate: f64,
    pub non_200: u64,
}

/// oha with `concurrency` connections for `duration`; at most `rate`
/// requests/s when given (with latency correction, so a stall counts).
pub async fn oha(
    oha: &Path,
    url: &str,
    bodies: &Path,
    concurrency: usize,
    duration: Duration,
    rate: Option<u32>,
) -> anyhow::Result<LoadRun> {
    let mut command = tokio::process::Command::new(oha);
    command
        .arg("--no-tui")
        .args(["--output-format", "json"])
        .arg(format!("-z{}s", duration.as_secs().max(1)))
        .arg(format!("-c{concurrency}"))
        .args(["-m", "POST", "-T", "application/json"])
        .arg("-Z")
        .arg(bodies);
    if let Some(rate) = rate {
        command.arg(format!("-q{rate}")).arg("--latency-correction");
    }
    let output = command.arg(url).output().await.context("run oha")?;
    if !output.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("oha's report: {}", String::from_utf8_lossy(&output.stdout)))?;
    let seconds = |value: &Value| value.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let statuses = report["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let non_200 = statuses
        .iter()
        .filter(|(status, _)| status.as_str() != "200")
        .map(|(_, count)| count.as_u64().unwrap_or(0))
        .sum();
    Ok(LoadRun {
        requests_per_second: report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: seconds(&report["latencyPercentiles"]["p50"]),
        p99_ms: seconds(&report["latencyPercentiles"]["p99"]),
        success_rate: report["summary"]["successRate"].as_f64().unwrap_or(0.0),
        non_200,
    })
}
