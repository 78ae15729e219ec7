//! Recording an image's outcome through the command API, as any writer does:
//! `RecordImageOutcome` on the post's stream. The post decides whether it
//! still wants it (a second outcome for an image, or one for a post erased
//! since, changes nothing), so a redelivered upload is harmless.

use std::time::Duration;

use chronicle_schema::images::ImageOutcome;
use chronicle_schema::{Command, CommandEnvelope, ErrorBody};
use uuid::Uuid;

/// The outcome is not recorded (yet). The post answers a no-op with success
/// (a second outcome, an erased or deleted post), so any refusal is a
/// misconfiguration or a deploy in progress (a rotated credential, a
/// command-service that does not know the command yet): retried, never
/// dropped, and the worker's lag shows it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the command-service is unreachable: {0}")]
    Unreachable(String),
    #[error("the command API answered {status}: {body}")]
    Refused { status: u16, body: String },
}

#[derive(Clone)]
pub struct Outcomes {
    http: reqwest::Client,
    endpoint: String,
    service_token: String,
}

impl Outcomes {
    pub fn new(base_url: &str, service_token: &str) -> Outcomes {
        Outcomes {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client with timeouts only always builds"),
            endpoint: format!("{}/v1/commands", base_url.trim_end_matches('/')),
            service_token: service_token.to_owned(),
        }
    }

    pub async fn record(
        &self,
        post_id: Uuid,
        image_id: Uuid,
        correlation_id: Uuid,
        outcome: ImageOutcome,
    ) -> Result<(), RecordError> {
        let envelope = CommandEnvelope {
            command_id: Uuid::now_v7(),
            correlation_id,
            idempotency_key: None,
            command: Command::RecordImageOutcome {
                post_id,
                image_id,
                outcome,
            },
        };
        let response = self
            .http
            .post(&self.endpoint)
            .header("x-service-token", &self.service_token)
            .json(&envelope)
            .send()
            .await
            .map_err(|error| RecordError::Unreachable(error.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .json::<ErrorBody>()
            .await
            .map(|body| format!("{}: {}", body.code.as_str(), body.message))
            .unwrap_or_else(|_| status.to_string());
        Err(RecordError::Refused {
            status: status.as_u16(),
            body,
        })
    }

    /// Whether the command-service answers (for `/health/ready`).
    pub async fn ping(&self) -> Result<(), String> {
        let url = self.endpoint.replace("/v1/commands", "/health/live");
        match self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("command-service: {}", response.status())),
            Err(error) => Err(format!("command-service: {error}")),
        }
    }
}
