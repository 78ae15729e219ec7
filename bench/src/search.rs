//! Full-text search: two-word queries over the published posts, answered
//! by Chronicle's search endpoint (tantivy) and by Postgres full-text search
//! (a weighted tsvector with a GIN index) on the same corpus. Both answer
//! the top 10 by relevance with highlighted title and body, as the endpoint
//! does; the Postgres variant without highlights is measured too.

use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::generator::Words;
use crate::stats::{Latencies, Percentiles};

/// Two-word queries of words that are common but not stop words, so most
/// queries match a few hundred to many thousands of posts.
pub fn queries(count: usize, seed: u64) -> Vec<String> {
    let words = Words::new();
    let ranked = words.ranked();
    let pool = &ranked[60.min(ranked.len())..1_500.min(ranked.len())];
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let first = pool[rng.random_range(0..pool.len())];
            let mut second = pool[rng.random_range(0..pool.len())];
            while second == first {
                second = pool[rng.random_range(0..pool.len())];
            }
            format!("{first} {second}")
        })
        .collect()
}

/// The Postgres baseline's corpus: the posts the endpoint can find.
pub async fn create_postgres_corpus(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bench_fts CASCADE;
         CREATE SCHEMA bench_fts;
         CREATE TABLE bench_fts.posts AS
             SELECT id, title, body FROM read.posts
             WHERE public;
         ALTER TABLE bench_fts.posts ADD COLUMN document tsvector GENERATED ALWAYS AS (
             setweight(to_tsvector('english', title), 'A') ||
             setweight(to_tsvector('english', body), 'B')) STORED;
         CREATE INDEX posts_document_idx ON bench_fts.posts USING gin (document);
         ANALYZE bench_fts.posts;",
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM bench_fts.posts")
        .fetch_one(pool)
        .await?)
}

const POSTGRES_TOP10: &str = "SELECT id, title, ts_rank_cd(document, query) AS rank
     FROM bench_fts.posts, websearch_to_tsquery('english', $1) query
     WHERE document @@ query
     ORDER BY rank DESC LIMIT 10";

const POSTGRES_TOP10_HIGHLIGHTED: &str = "WITH hits AS (
         SELECT id, title, body, ts_rank_cd(document, query) AS rank, query
         FROM bench_fts.posts, websearch_to_tsquery('english', $1) query
         WHERE document @@ query
         ORDER BY rank DESC LIMIT 10)
     SELECT id, rank,
            ts_headline('english', title, query, 'StartSel=<mark>, StopSel=</mark>, HighlightAll=true'),
            ts_headline('english', body, query, 'StartSel=<mark>, StopSel=</mark>, MaxFragments=1, MaxWords=35')
     FROM hits ORDER BY rank DESC";

#[derive(Clone, Debug, Serialize)]
pub struct SearchRun {
    pub latency: Percentiles,
    pub queries_with_hits: usize,
    pub mean_hits: f64,
}

/// Each query in turn (one client), `rounds` times; latency per query.
pub async fn chronicle(
    base_url: &str,
    queries: &[String],
    rounds: usize,
) -> anyhow::Result<SearchRun> {
    let http = reqwest::Client::new();
    let url = format!("{}/search", base_url.trim_end_matches('/'));
    let mut latencies = Latencies::default();
    let (mut with_hits, mut hits) = (0, 0);
    for round in 0..rounds {
        for query in queries {
            let started = Instant::now();
            let response = http
                .get(&url)
                .query(&[("q", query.as_str()), ("first", "10")])
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("search {query:?}: {}", response.status());
            }
            let body: Value = response.json().await?;
            latencies.record(started.elapsed());
            if round == 0 {
                let found = body["hits"].as_array().map_or(0, Vec::len);
                hits += found;
                with_hits += usize::from(found > 0);
            }
        }
    }
    Ok(SearchRun {
        latency: latencies.percentiles(),
        queries_with_hits: with_hits,
        mean_hits: hits as f64 / queries.len() as f64,
    })
}

pub async fn postgres(
    pool: &PgPool,
    queries: &[String],
    rounds: usize,
    highlighted: bool,
) -> anyhow::Result<SearchRun> {
    let sql = if highlighted {
        POSTGRES_TOP10_HIGHLIGHTED
    } else {
        POSTGRES_TOP10
    };
    let mut latencies = Latencies::default();
    let (mut with_hits, mut hits) = (0, 0);
    for round in 0..rounds {
        for query in queries {
            let started = Instant::now();
            let rows = sqlx::query(sql).bind(query).fetch_all(pool).await?;
            latencies.record(started.elapsed());
            if round == 0 {
                hits += rows.len();
                with_hits += usize::from(!rows.is_empty());
            }
        }
    }
    Ok(SearchRun {
        latency: latencies.percentiles(),
        queries_with_hits: with_hits,
        mean_hits: hits as f64 / queries.len() as f64,
    })
}

/// Warms both (first queries load index pages and the GIN index).
pub async fn warm_up(base_url: &str, pool: &PgPool, queries: &[String]) -> anyhow::Result<()> {
    chronicle(base_url, queries, 1).await?;
    postgres(pool, queries, 1, true).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
