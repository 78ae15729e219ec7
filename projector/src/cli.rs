//! The operator's commands, run against a running projector's admin API:
//! `projector replay` (with a progress bar on a terminal) and `projector redrive`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::admin::{RebuildRequest, SERVICE_TOKEN_HEADER};
use crate::dead_letters::RedriveReport;
use crate::rebuild::{Progress, Projection};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the projector at {url} ({source}); is it running (./dev up)?")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the projector refused: {0}")]
    Refused(String),
    #[error("the rebuild of {projection} failed: {error}")]
    Failed { projection: String, error: String },
}

pub struct AdminClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl AdminClient {
    pub fn new(url: &str, token: &str) -> AdminClient {
        AdminClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client with a timeout always builds"),
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.url.clone(),
            source,
        }
    }

    async fn refused(response: reqwest::Response) -> CliError {
        let status = response.status();
        CliError::Refused(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        ))
    }

    /// Rebuilds `projection`, showing progress, and answers the final progress.
    pub async fn replay(&self, projection: Projection, swap: bool) -> Result<Progress, CliError> {
        let response = self
            .http
            .post(format!("{}/admin/rebuild", self.url))
            .header(SERVICE_TOKEN_HEADER, &self.token)
            .json(&RebuildRequest { projection, swap })
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        if !response.status().is_success() {
            return Err(AdminClient::refused(response).await);
        }
        let bar = ProgressBar::new(0).with_prefix(projection.name());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:40}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let all: Vec<Progress> = self
                .http
                .get(format!("{}/admin/rebuild", self.url))
                .header(SERVICE_TOKEN_HEADER, &self.token)
                .send()
                .await
                .map_err(|error| self.unreachable(error))?
                .json()
                .await
                .map_err(|error| self.unreachable(error))?;
            let Some(progress) = all
                .into_iter()
                .find(|progress| progress.projection == projection.name())
            else {
                continue;
            };
            bar.set_length(progress.total.max(progress.processed));
            bar.set_position(progress.processed);
            bar.set_message(progress.phase.clone());
            match progress.state.as_str() {
                "DONE" => {
                    bar.finish_with_message("done");
                    return Ok(progress);
                }
                "FAILED" => {
                    bar.abandon_with_message("failed");
                    return Err(CliError::Failed {
                        projection: progress.projection,
                        error: progress.error.unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
    }

    pub async fn redrive(&self) -> Result<RedriveReport, CliError> {
        let response = self
            .http
            .post(format!("{}/admin/redrive", self.url))
            .header(SERVICE_TOKEN_HEADER, &self.token)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        if !response.status().is_success() {
            return Err(AdminClient::refused(response).await);
        }
        response
            .json()
            .await
            .map_err(|error| self.unreachable(error))
    }
}
