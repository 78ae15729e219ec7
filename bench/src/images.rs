//! Images: the image worker's renditions beside `vipsthumbnail`'s (libvips,
//! from Debian's libvips-tools): the same images, the same renditions (each
//! width in WebP and JPEG, metadata stripped), on the same cores; and the
//! time from an upload to its image READY in `Post.images` at a fixed rate.
//!
//! The images are generated here (photo-like: gradients, shapes and grain,
//! encoded as JPEG at quality 90), never downloaded. Each round uploads them
//! with a comment segment naming the round, so their content hashes differ
//! and nothing a round made before is reused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chronicle_schema::images::{RENDITION_FORMATS, rendition_name, rendition_widths};
use chronicle_schema::read_models::posts::{ImageStatus, PostImage};
use rand::{Rng, SeedableRng};
use reqwest::multipart::{Form, Part};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::stats::{Latencies, Percentiles};

/// A generated photo: its bytes and stored size.
#[derive(Clone)]
pub struct Photo {
    pub bytes: Arc<Vec<u8>>,
    pub width: u32,
    pub height: u32,
}

impl Photo {
    /// The same pixels with a JPEG comment naming `variant`: another hash.
    pub fn variant(&self, variant: &str) -> Vec<u8> {
        let comment = format!("chronicle bench {variant}");
        let mut bytes = Vec::with_capacity(self.bytes.len() + comment.len() + 4);
        bytes.extend_from_slice(&self.bytes[..2]);
        bytes.extend_from_slice(&[0xFF, 0xFE]);
        bytes.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(comment.as_bytes());
        bytes.extend_from_slice(&self.bytes[2..]);
        bytes
    }

    /// Renditions the worker makes of it.
    pub fn renditions(&self) -> usize {
        rendition_widths(self.width).len() * RENDITION_FORMATS.len()
    }
}

/// `count` photo-like JPEGs `width` × `height`.
pub fn photos(count: usize, width: u32, height: u32, seed: u64) -> Vec<Photo> {
    (0..count)
        .map(|index| {
            let mut random = rand::rngs::StdRng::seed_from_u64(seed + index as u64);
            let (base, shift) = (random.random::<[u8; 3]>(), random.random::<[u8; 3]>());
            let circles: Vec<(f32, f32, f32, [u8; 3])> = (0..12)
                .map(|_| {
                    (
                        random.random_range(0.0..width as f32),
                        random.random_range(0.0..height as f32),
                        random.random_range(20.0..(height as f32 / 3.0)),
                        random.random::<[u8; 3]>(),
                    )
                })
                .collect();
            let image = image::RgbImage::from_fn(width, height, |x, y| {
                let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
                let mut pixel = [0u8; 3];
                for channel in 0..3 {
                    pixel[channel] = (f32::from(base[channel]) * (1.0 - fx)
                        + f32::from(shift[channel]) * fy)
                        .min(255.0) as u8;
                }
                for (cx, cy, radius, color) in &circles {
                    if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < radius.powi(2) {
                        pixel = *color;
                    }
                }
                // Grain, as a sensor's: what makes a photo expensive to encode.
                let grain = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 17) as u8;
                image::Rgb(pixel.map(|value| value.saturating_add(grain)))
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&image)
                .expect("a generated photo encodes");
            Photo {
                bytes: Arc::new(bytes),
                width,
                height,
            }
        })
        .collect()
}

/// One side's renditions of a set of photos.
#[derive(Clone, Debug, Serialize)]
pub struct RenditionRun {
    pub images: usize,
    pub renditions: usize,
    pub seconds: f64,
    pub renditions_per_second: f64,
}

impl RenditionRun {
    pub fn of(images: usize, renditions: usize, elapsed: Duration) -> RenditionRun {
        let seconds = elapsed.as_secs_f64();
        RenditionRun {
            images,
            renditions,
            seconds,
            renditions_per_second: renditions as f64 / seconds,
        }
    }
}

/// `vipsthumbnail` makes every rendition of every photo (one process per
/// rendition, as a script would run it), `parallel` at a time.
pub async fn vips(
    vipsthumbnail: &Path,
    photos: &[Photo],
    work_dir: &Path,
    round: usize,
    parallel: usize,
) -> anyhow::Result<RenditionRun> {
    let dir = work_dir.join(format!("vips-{round}"));
    std::fs::create_dir_all(&dir)?;
    let mut jobs = Vec::new();
    for (index, photo) in photos.iter().enumerate() {
        let original = dir.join(format!("photo-{index}.jpg"));
        std::fs::write(&original, photo.variant(&format!("vips {round}")))?;
        for width in rendition_widths(photo.width) {
            for format in RENDITION_FORMATS {
                let out = dir.join(format!("photo-{index}-{}", rendition_name(width, format)));
                // The worker's qualities; strip: no metadata, as the worker.
                let quality = if format.extension() == "webp" { 80 } else { 82 };
                jobs.push((
                    original.clone(),
                    format!("{width}x"),
                    format!("{}[Q={quality},strip]", out.display()),
                ));
            }
        }
    }
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let started = Instant::now();
    let mut running = Vec::new();
    let renditions = jobs.len();
    for (original, size, out) in jobs {
        let permit = slots.clone().acquire_owned().await?;
        let program = vipsthumbnail.to_owned();
        running.push(tokio::spawn(async move {
            let status = tokio::process::Command::new(program)
                .arg(&original)
                .args(["--size", &size, "-o", &out])
                .status()
                .await;
            drop(permit);
            status
        }));
    }
    for job in running {
        let status = job.await??;
        if !status.success() {
            bail!("vipsthumbnail failed: {status}");
        }
    }
    Ok(RenditionRun::of(
        photos.len(),
        renditions,
        started.elapsed(),
    ))
}

/// Uploads through the public API as one author, into posts of theirs.
#[derive(Clone)]
pub struct Uploader {
    http: reqwest::Client,
    url: String,
    bearer: String,
}

impl Uploader {
    pub fn new(query_service_url: &str, bearer: &str) -> Uploader {
        Uploader {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a plain client builds"),
            url: format!("{}/images", query_service_url.trim_end_matches('/')),
            bearer: bearer.to_owned(),
        }
    }

    /// Uploads; answers the image's id.
    pub async fn upload(&self, post: Uuid, bytes: Vec<u8>) -> anyhow::Result<Uuid> {
        let form = Form::new()
            .text("postId", post.to_string())
            .text("alt", "A photo")
            .part("file", Part::bytes(bytes).file_name("photo.jpg"));
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.bearer)
            .multipart(form)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("upload refused ({status}): {body}");
        }
        body["imageId"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .context("an upload answers its image id")
    }
}

/// How many of `images` have an outcome recorded in the event store.
pub async fn outcomes(pool: &PgPool, images: &[Uuid]) -> anyhow::Result<usize> {
    let ids: Vec<String> = images.iter().map(Uuid::to_string).collect();
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events
         WHERE event_type IN ('PostImageProcessed', 'PostImageRejected')
           AND payload->>'imageId' = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    Ok(count as usize)
}

/// Waits until every one of `images` has an outcome.
pub async fn wait_for_outcomes(
    pool: &PgPool,
    images: &[Uuid],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while outcomes(pool, images).await? < images.len() {
        if Instant::now() > deadline {
            bail!("images still without an outcome after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Upload-to-READY latencies at a fixed rate.
#[derive(Clone, Debug, Serialize)]
pub struct ReadyRun {
    pub uploads: usize,
    pub uploads_per_second: f64,
    pub upload_to_ready: Percentiles,
    pub failed: usize,
}

/// Uploads at a fixed rate for a while.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub rate: f64,
    pub duration: Duration,
}

/// Uploads `photos` (cycled, each a new variant) at `rate` per second for
/// `duration`, `per_post` into each of `posts`, and times each from the
/// upload's start until its image reads READY in the post's read model.
pub async fn upload_to_ready(
    uploader: &Uploader,
    pool: &PgPool,
    posts: &[Uuid],
    per_post: usize,
    photos: &[Photo],
    schedule: Schedule,
    label: &str,
) -> anyhow::Result<ReadyRun> {
    let Schedule { rate, duration } = schedule;
    let total = (rate * duration.as_secs_f64()).round() as usize;
    if posts.len() * per_post < total {
        bail!(
            "{} posts take {} images, not {total}",
            posts.len(),
            posts.len() * per_post
        );
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    // Open loop: each upload starts on time, whether or not the ones before
    // have been answered; each answered one is watched from then on.
    let (answered, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..total {
        let post = posts[index / per_post];
        let bytes = photos[index % photos.len()].variant(&format!("{label} {index}"));
        let uploader = uploader.clone();
        let answered = answered.clone();
        let due = started + interval * index as u32;
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let at = Instant::now();
            let _ = answered.send(
                uploader
                    .upload(post, bytes)
                    .await
                    .map(|image| (post, image, at)),
            );
        });
    }
    drop(answered);
    let mut latencies = Latencies::default();
    let (mut pending, mut failed, mut sending) = (Vec::new(), 0, true);
    let deadline = started + duration + Duration::from_secs(120);
    while sending || !pending.is_empty() {
        if Instant::now() > deadline {
            bail!("{} images never became READY", pending.len());
        }
        loop {
            match arrivals.try_recv() {
                Ok(upload) => pending.push(upload?),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    sending = false;
                    break;
                }
            }
        }
        let rows: Vec<(Uuid, sqlx::types::Json<Vec<PostImage>>)> =
            sqlx::query_as("SELECT id, images FROM read.posts WHERE id = ANY($1)")
                .bind(posts)
                .fetch_all(pool)
                .await?;
        let now = Instant::now();
        pending.retain(|(post, image, at)| {
            let status = rows
                .iter()
                .filter(|(id, _)| id == post)
                .flat_map(|(_, images)| images.0.iter())
                .find(|candidate| candidate.id == *image)
                .map(|candidate| candidate.status);
            match status {
                Some(ImageStatus::Ready) => {
                    latencies.record(now - *at);
                    false
                }
                Some(ImageStatus::Failed) => {
                    failed += 1;
                    false
                }
                _ => true,
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(ReadyRun {
        uploads: total,
        uploads_per_second: total as f64 / duration.as_secs_f64(),
        upload_to_ready: latencies.percentiles(),
        failed,
    })
}
