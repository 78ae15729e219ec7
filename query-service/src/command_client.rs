//! Handing commands to the command-service.

use std::time::Duration;

use chronicle_schema::{Command, CommandEnvelope, CommandReply, ErrorBody};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use uuid::Uuid;

use crate::error::ApiError;

/// Who sent the request the command comes from.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The caller's own access token, forwarded for the command-service to verify.
    pub bearer: Option<String>,
    pub client_address: String,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Clone)]
pub struct CommandClient {
    http: reqwest::Client,
    endpoint: String,
    service_token: String,
}

impl CommandClient {
    pub fn new(base_url: &str, service_token: &str, timeout: Duration) -> CommandClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .expect("a client with timeouts only always builds");
        CommandClient {
            http,
            endpoint: format!("{}/v1/commands", base_url.trim_end_matches('/')),
            service_token: service_token.to_owned(),
        }
    }

    pub async fn send(&self, caller: &Caller, command: Command) -> Result<CommandReply, ApiError> {
        let command_name = command.name();
        let envelope = CommandEnvelope {
            command_id: Uuid::now_v7(),
            correlation_id: caller
                .request_id
                .as_deref()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(Uuid::now_v7),
            idempotency_key: caller.idempotency_key.clone(),
            command,
        };
        let response = self
            .http
            .post(&self.endpoint)
            .headers(self.headers(caller))
            .json(&envelope)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(%error, command = command_name, "command-service unreachable");
                ApiError::unavailable("the write side is unavailable; try again shortly")
            })?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<CommandReply>()
                .await
                .map_err(|error| ApiError::internal(format!("command reply: {error}")));
        }
        match response.json::<ErrorBody>().await {
            Ok(body) => Err(ApiError::from(body)),
            Err(error) => Err(ApiError::internal(format!(
                "command-service answered {status} without an error body: {error}"
            ))),
        }
    }

    /// Hands an image upload (its multipart body as received) to the
    /// command-service; answers its status and JSON body, to pass on as is.
    pub async fn upload_image(
        &self,
        caller: &Caller,
        content_type: HeaderValue,
        body: bytes::Bytes,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), ApiError> {
        let mut headers = self.headers(caller);
        headers.insert(reqwest::header::CONTENT_TYPE, content_type);
        if let Some(key) = &caller.idempotency_key
            && let Ok(value) = HeaderValue::from_str(key)
        {
            headers.insert("idempotency-key", value);
        }
        let response = self
            .http
            .post(self.endpoint.replace("/v1/commands", "/v1/images"))
            // An upload is decoded whole before it is attached: more than a command.
            .timeout(std::time::Duration::from_secs(60))
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(%error, "command-service unreachable");
                ApiError::unavailable("the write side is unavailable; try again shortly")
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| ApiError::internal(format!("upload reply: {error}")))?;
        Ok((status, body))
    }

    fn headers(&self, caller: &Caller) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set("x-service-token", &self.service_token);
        set("x-client-address", &caller.client_address);
        if let Some(request_id) = &caller.request_id {
            set("x-request-id", request_id);
        }
        if let Some(bearer) = &caller.bearer {
            set(AUTHORIZATION.as_str(), &format!("Bearer {bearer}"));
        }
        // The command continues this request's trace.
        chronicle_platform::trace_context::inject_into(&mut headers);
        headers
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
