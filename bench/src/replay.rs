//! Replay: a full rebuild of every projection (read models and search
//! index) from the event store, through the running projector's admin API
//! as `./dev replay` does it, timed from the first start to the last swap.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Debug, Serialize)]
pub struct ReplayRun {
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Per projection: seconds from its start to its swap.
    pub projections: Vec<(String, f64)>,
    /// Per projection, its phases and the seconds each took.
    pub phases: Vec<(String, Vec<(String, f64)>)>,
}

pub async fn rebuild_all(projector_url: &str, service_token: &str) -> anyhow::Result<ReplayRun> {
    let http = reqwest::Client::new();
    let url = format!("{}/admin/rebuild", projector_url.trim_end_matches('/'));
    let projections = ["read_models", "search"];
    let started = Instant::now();
    for projection in projections {
        let response = http
            .post(&url)
            .header("x-service-token", service_token)
            .json(&json!({"projection": projection, "swap": true}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "the projector refused to rebuild {projection}: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let progress: Vec<Value> = http
            .get(&url)
            .header("x-service-token", service_token)
            .send()
            .await?
            .json()
            .await?;
        if let Some(failed) = progress.iter().find(|entry| entry["state"] == "FAILED") {
            bail!("a rebuild failed: {failed}");
        }
        let done = progress
            .iter()
            .filter(|entry| entry["state"] == "DONE")
            .count();
        if done < projections.len() {
            continue;
        }
        let seconds = started.elapsed().as_secs_f64();
        let events = progress
            .iter()
            .filter_map(|entry| entry["processed"].as_u64())
            .max()
            .unwrap_or(0);
        let timed = |entry: &Value| -> Option<(String, f64)> {
            let at =
                |field: &str| chrono::DateTime::parse_from_rfc3339(entry[field].as_str()?).ok();
            let took = at("finished_at")? - at("started_at")?;
            Some((
                entry["projection"].as_str()?.to_owned(),
                took.num_milliseconds() as f64 / 1000.0,
            ))
        };
        let phases = |entry: &Value| -> Option<(String, Vec<(String, f64)>)> {
            let timings = entry["phases"]
                .as_array()?
                .iter()
                .filter_map(|phase| {
                    Some((
                        phase["phase"].as_str()?.to_owned(),
                        phase["seconds"].as_f64()?,
                    ))
                })
                .collect();
            Some((entry["projection"].as_str()?.to_owned(), timings))
        };
        return Ok(ReplayRun {
            events,
            seconds,
            events_per_second: events as f64 / seconds,
            projections: progress.iter().filter_map(timed).collect(),
            phases: progress.iter().filter_map(phases).collect(),
        });
    }
}
