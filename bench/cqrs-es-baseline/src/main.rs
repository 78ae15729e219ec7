//! A command API on cqrs-es + postgres-es, as a team would write it with the
//! crates' own patterns: an HTTP endpoint that takes Chronicle's command
//! envelope, executes `CreatePost` on a fresh aggregate (one event per
//! command) through `PostgresCqrs`, and answers once the event is committed.
//! The benchmark drives it with the very requests it sends to Chronicle.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::{PostgresCqrs, postgres_cqrs};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Parser)]
struct Config {
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8090")]
    http_addr: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 30)]
    database_max_connections: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Post {
    created: bool,
    title: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
enum PostCommand {
    CreatePost {
        title: String,
        body: String,
        tags: Option<Vec<String>>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PostEvent {
    PostCreated {
        title: String,
        body: String,
        tags: Vec<String>,
    },
}

impl DomainEvent for PostEvent {
    fn event_type(&self) -> String {
        "PostCreated".to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PostError(&'static str);

impl Aggregate for Post {
    const TYPE: &'static str = "post";
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = PostError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PostCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PostError> {
        match command {
            PostCommand::CreatePost { title, body, tags } => {
                if self.created {
                    return Err(PostError("the post exists"));
                }
                if title.trim().is_empty() {
                    return Err(PostError("a title is required"));
                }
                let event = PostEvent::PostCreated {
                    title,
                    body,
                    tags: tags.unwrap_or_default(),
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: PostEvent) {
        match event {
            PostEvent::PostCreated { title, .. } => {
                self.created = true;
                self.title = title;
            }
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    command: PostCommand,
}

async fn execute(
    State(cqrs): State<Arc<PostgresCqrs<Post>>>,
    Json(envelope): Json<Envelope>,
) -> (StatusCode, Json<serde_json::Value>) {
    let id = Uuid::now_v7();
    match cqrs.execute(&id.to_string(), envelope.command).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"streamId": id, "version": 1})),
        ),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": error.to_string()})),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .connect(&config.database_url)
        .await?;
    // postgres-es's schema (its db/init.sql), created here so a fresh database works.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS events (
             aggregate_type text NOT NULL,
             aggregate_id   text NOT NULL,
             sequence       bigint CHECK (sequence >= 0) NOT NULL,
             event_type     text NOT NULL,
             event_version  text NOT NULL,
             payload        json NOT NULL,
             metadata       json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence)
         );
         CREATE TABLE IF NOT EXISTS snapshots (
             aggregate_type   text NOT NULL,
             aggregate_id     text NOT NULL,
             last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
             payload          json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
         );",
    )
    .execute(&pool)
    .await?;
    let cqrs = Arc::new(postgres_cqrs::<Post>(pool, Vec::new(), ()));
    let app = Router::new()
        .route("/v1/commands", post(execute))
        .route("/health/ready", get(|| async { "ok" }))
        .with_state(cqrs);
    let listener = tokio::net::TcpListener::bind(&config.http_addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // The bench stops its processes with SIGTERM.
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        })
        .await?;
    Ok(())
}
