//! Consuming the event bus for uploads (`PostImageAdded`); every other event
//! is passed over.
//!
//! A batch's images are processed a few at a time, and its offsets are
//! committed only once each has its outcome recorded: a worker killed
//! mid-batch leaves the batch to be delivered again, and the second time
//! finds its renditions stored (nothing is made twice) and its outcome
//! recorded (the post takes one outcome per image).

use std::sync::Arc;
use std::time::Instant;

use chronicle_platform::retry::{self, Backoff};
use chronicle_schema::DomainEvent;
use chronicle_schema::bus;
use chronicle_schema::events::{PostEvent, PostImageAdded};
use chronicle_schema::images::{
    self, ImageFormat, ImageOutcome, RENDITION_FORMATS, Rendition, rendition_name,
    rendition_widths, scaled_height,
};
use chronicle_schema::privacy::Keyring;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::outcomes::Outcomes;
use crate::renditions;

const BATCH_SIZE: usize = 64;

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub concurrency: usize,
}

/// What processing needs.
#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn ObjectStore>,
    pub outcomes: Outcomes,
}

/// An upload to process.
#[derive(Clone, Debug)]
struct Upload {
    post_id: Uuid,
    correlation_id: Uuid,
    image: PostImageAdded,
}

/// A failure worth retrying (storage or the command API away).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transient(String);

pub async fn run(settings: ConsumerSettings, worker: Worker, shutdown: CancellationToken) {
    retry::until_ok("the image consumer", &shutdown, Backoff::standard(), || {
        consume(&settings, &worker, &shutdown)
    })
    .await;
    tracing::info!("image consumer stopped");
}

fn create_consumer(
    settings: &ConsumerSettings,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    chronicle_platform::kafka::group_consumer_config(&settings.brokers, &settings.group)
        // Processing a batch takes seconds; a member is not dropped for it.
        .set("max.poll.interval.ms", "300000")
        .create()
}

async fn consume(
    settings: &ConsumerSettings,
    worker: &Worker,
    shutdown: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer = create_consumer(settings)?;
    consumer.subscribe(&[settings.topic.as_str()])?;
    tracing::info!(topic = %settings.topic, group = %settings.group, "consuming image uploads");
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => message?.detach(),
        };
        let mut messages = vec![first];
        while messages.len() < BATCH_SIZE {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => messages.push(message.detach()),
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        let uploads: Vec<Upload> = messages.iter().filter_map(upload).collect();
        let processed = futures::stream::iter(uploads)
            .map(|upload| async move {
                retry::until_ok("processing an image", shutdown, Backoff::standard(), || {
                    process(worker, &upload)
                })
                .await
            })
            .buffer_unordered(settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        if processed.iter().any(Option::is_none) {
            // Stopped midway: the batch is delivered again, to whoever is next.
            return Ok(());
        }
        chronicle_platform::kafka::commit_past(&consumer, &settings.topic, &messages)?;
    }
}

/// The upload a message carries, if it is one this worker can read. Only
/// the envelope and the plain fields are needed: the alt text stays sealed.
fn upload(message: &OwnedMessage) -> Option<Upload> {
    let headers = message.headers();
    let header = |name: &str| {
        headers.and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
        })
    };
    let envelope = bus::decode_envelope(header).ok()?;
    if envelope.event_type != "PostImageAdded" {
        return None;
    }
    let correlation_id = envelope.metadata.correlation_id;
    match envelope.open(message.payload().unwrap_or_default(), &Keyring::none()) {
        Ok(recorded) => match recorded.event {
            DomainEvent::Post(PostEvent::ImageAdded(image)) => Some(Upload {
                post_id: recorded.stream_id,
                correlation_id,
                image,
            }),
            _ => None,
        },
        Err(error) => {
            // A newer schema than this build knows, or a damaged message:
            // counted and passed over (the image stays PROCESSING until a
            // worker that reads it is deployed and the group is rewound).
            metrics::counter!("chronicle_image_worker_unreadable_total").increment(1);
            tracing::error!(%error, partition = message.partition(), offset = message.offset(),
                "an image upload on the bus could not be read; passed over");
            None
        }
    }
}

async fn process(worker: &Worker, upload: &Upload) -> Result<(), Transient> {
    let started = Instant::now();
    let image = &upload.image;
    let mut outcome = match stored_renditions(worker, image).await? {
        Some(renditions) => ImageOutcome::Processed { renditions },
        None => make_renditions(worker, image).await?,
    };
    if let ImageOutcome::Processed { renditions } = &mut outcome {
        // Narrowest first, as readers list them.
        renditions
            .sort_by_key(|rendition| (rendition.width, rendition.format != ImageFormat::Webp));
    }
    let label = match &outcome {
        ImageOutcome::Processed { .. } => "processed",
        ImageOutcome::Rejected { .. } => "rejected",
    };
    worker
        .outcomes
        .record(
            upload.post_id,
            image.image_id,
            upload.correlation_id,
            outcome,
        )
        .await
        .map_err(|error| Transient(error.to_string()))?;
    metrics::counter!("chronicle_images_processed_total", "outcome" => label).increment(1);
    metrics::histogram!("chronicle_image_processing_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// The renditions an image should have, if every one is stored already (a
/// redelivery, a replay, or the same bytes uploaded to another post).
async fn stored_renditions(
    worker: &Worker,
    image: &PostImageAdded,
) -> Result<Option<Vec<Rendition>>, Transient> {
    let mut renditions = Vec::new();
    for width in rendition_widths(image.width).into_iter().rev() {
        for format in RENDITION_FORMATS {
            let key = Path::from(images::rendition_key(
                &image.hash,
                &rendition_name(width, format),
            ));
            match worker.store.head(&key).await {
                Ok(meta) => renditions.push(Rendition {
                    width,
                    height: scaled_height((image.width, image.height), width),
                    format,
                    bytes: meta.size,
                }),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(Transient(format!("object store: {error}"))),
            }
        }
    }
    Ok(Some(renditions))
}

async fn make_renditions(
    worker: &Worker,
    image: &PostImageAdded,
) -> Result<ImageOutcome, Transient> {
    let original = match worker
        .store
        .get(&Path::from(images::original_key(&image.hash)))
        .await
    {
        Ok(object) => object
            .bytes()
            .await
            .map_err(|error| Transient(format!("reading the original: {error}")))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(ImageOutcome::Rejected {
                reason: "the original is missing from the object store".to_owned(),
            });
        }
        Err(error) => return Err(Transient(format!("reading the original: {error}"))),
    };
    let format = image.format;
    let made = tokio::task::spawn_blocking(move || {
        renditions::decode(&original, format).and_then(|upright| renditions::make(&upright))
    })
    .await
    .map_err(|error| Transient(format!("rendition task: {error}")))?;
    let made = match made {
        Ok(made) => made,
        Err(unreadable) => {
            return Ok(ImageOutcome::Rejected {
                reason: unreadable.to_string(),
            });
        }
    };
    let mut renditions = Vec::with_capacity(made.len());
    for made in made {
        let key = Path::from(images::rendition_key(&image.hash, &made.rendition.name()));
        worker
            .store
            .put(&key, PutPayload::from(made.bytes))
            .await
            .map_err(|error| Transient(format!("storing a rendition: {error}")))?;
        metrics::counter!("chronicle_image_renditions_total").increment(1);
        renditions.push(made.rendition);
    }
    Ok(ImageOutcome::Processed { renditions })
}
