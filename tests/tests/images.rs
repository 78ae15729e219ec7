//! Images in posts, end to end on real services: an upload through the public
//! API, its original in the object store, `PostImageAdded` on the bus, the
//! image worker's renditions and outcome, `Post.images` and the served
//! renditions. Refused uploads leave nothing stored; a worker stopped
//! mid-batch loses nothing.

use std::time::Duration;

use chronicle_tests::images::{bomb, has_gps, jpeg_with_exif, png};
use chronicle_tests::{ServiceProcess, Session, TestApp, TestOptions, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

const IMAGES: &str = "query($id: ID!) { post(id: $id) { images {
    id status alt width height failure renditions { url width height format } } } }";

async fn app_with_worker() -> TestApp {
    TestApp::spawn_with(TestOptions {
        image_worker: true,
        ..TestOptions::default()
    })
    .await
}

async fn images_of(app: &TestApp, session: &Session, post: Uuid) -> Vec<Value> {
    let response = app
        .graphql(IMAGES)
        .variables(json!({"id": post}))
        .bearer(&session.access_token)
        .send()
        .await;
    response.data()["post"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every image of the post has left PROCESSING.
async fn settled(app: &TestApp, session: &Session, post: Uuid, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let images = images_of(app, session, post).await;
        if images.len() == count && images.iter().all(|image| image["status"] != "PROCESSING") {
            return images;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the images to be processed: {images:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_uploaded_photo_becomes_ready_with_renditions_served_without_its_metadata() {
    let app = app_with_worker().await;
    let (_, alice) = app.signed_in("alice").await;
    let post = app.published_post(&alice, "Holiday", &[]).await;

    // Stored 1200 × 800 with orientation 6: shown upright, 800 × 1200.
    let photo = jpeg_with_exif(1200, 800, 6);
    assert!(has_gps(&photo), "the original carries a GPS position");
    let uploaded = app
        .upload_image(
            Some(&alice),
            post,
            "The harbour at dusk",
            "IMG_0001.JPG",
            photo,
        )
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    assert_eq!(uploaded.body["status"], "PROCESSING");
    assert_eq!(
        (
            uploaded.body["width"].as_u64(),
            uploaded.body["height"].as_u64()
        ),
        (Some(800), Some(1200))
    );

    let images = settled(&app, &alice, post, 1).await;
    let image = &images[0];
    assert_eq!(image["status"], "READY", "{image}");
    assert_eq!(image["id"], uploaded.image_id().to_string());
    assert_eq!(image["alt"], "The harbour at dusk");
    let renditions = image["renditions"].as_array().unwrap();
    let sizes: Vec<(u64, u64, &str)> = renditions
        .iter()
        .map(|r| {
            (
                r["width"].as_u64().unwrap(),
                r["height"].as_u64().unwrap(),
                r["format"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        vec![(320, 480, "WEBP"), (320, 480, "JPEG")],
        "narrowest first, never wider than the original (800 px upright)"
    );

    for rendition in renditions {
        let url = format!("{}{}", app.query_url(), rendition["url"].as_str().unwrap());
        // Anyone may fetch a public post's image, and cache it for ever.
        let response = app.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let headers = response.headers().clone();
        let expected_type = match rendition["format"].as_str().unwrap() {
            "WEBP" => "image/webp",
            _ => "image/jpeg",
        };
        assert_eq!(headers["content-type"], expected_type);
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let bytes = response.bytes().await.unwrap();
        assert!(!has_gps(&bytes), "no rendition keeps the GPS position");
        assert!(
            !bytes.windows(6).any(|window| window == b"Exif\0\0"),
            "no rendition keeps an EXIF block"
        );
        let read = image::load_from_memory(&bytes).expect("a rendition is a readable image");
        assert_eq!(
            (u64::from(read.width()), u64::from(read.height())),
            (
                rendition["width"].as_u64().unwrap(),
                rendition["height"].as_u64().unwrap()
            )
        );
        let revalidated = app
            .http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304);
    }
    // Only the renditions are served: the original (with its EXIF) is not.
    let original = format!("{}/images/{}/original", app.query_url(), "0".repeat(64));
    assert_eq!(app.http.get(&original).send().await.unwrap().status(), 404);
}

/// What is sent, by whom; the status and code it must be refused with.
type Refusal<'a> = (
    &'static str,
    Option<&'a Session>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn refused_uploads_have_a_code_and_leave_nothing_stored() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.signed_in("alice").await;
    let (_, bob) = app.signed_in("bob").await;
    let post = app.create_post(&alice, "Drafted", &[]).await;

    let mut truncated = png(300, 200);
    truncated.truncate(truncated.len() / 2);
    let oversized = vec![0u8; 11 * 1024 * 1024];
    let cases: Vec<Refusal> = vec![
        (
            "a truncated file",
            Some(&alice),
            truncated,
            400,
            "BAD_USER_INPUT",
        ),
        (
            "a decompression bomb",
            Some(&alice),
            bomb(),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "a text file",
            Some(&alice),
            b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "an 11 MiB file",
            Some(&alice),
            oversized,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "someone else's post",
            Some(&bob),
            png(300, 200),
            403,
            "FORBIDDEN",
        ),
        ("no token", None, png(300, 200), 401, "UNAUTHENTICATED"),
    ];
    for (what, session, bytes, status, code) in cases {
        let uploaded = app
            .upload_image(session, post, "alt", "upload.png", bytes)
            .await;
        assert_eq!(
            (uploaded.status, uploaded.code()),
            (status, code),
            "{what}: {}",
            uploaded.body
        );
        assert!(
            !uploaded.body["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{what}: a message says why"
        );
    }
    assert_eq!(
        app.stored_objects("originals"),
        Vec::<std::path::PathBuf>::new()
    );
    let added: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'PostImageAdded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(added, 0, "no refused upload reached the event store");

    // A draft's image: its author sees it; no one else is told it exists.
    let uploaded = app
        .upload_image(Some(&alice), post, "", "ok.png", png(300, 200))
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    assert_eq!(app.stored_objects("originals").len(), 1);
}

/// The image-worker binary on this app's topic, store and command API.
async fn worker_process(app: &TestApp, group: &str) -> ServiceProcess {
    ServiceProcess::start(
        "image-worker",
        Vec::new(),
        vec![
            ("KAFKA_BROKERS", app.brokers.clone()),
            ("KAFKA_TOPIC", app.topic.clone()),
            ("CONSUMER_GROUP", group.to_owned()),
            (
                "OBJECT_STORE_URL",
                app.object_store_dir.display().to_string(),
            ),
            ("COMMAND_SERVICE_URL", app.command_url().to_owned()),
            ("COMMAND_API_TOKEN", app.command_api_token.clone()),
        ],
        "warn",
        None,
    )
    .await
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_records_one_outcome_per_image() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.signed_in("alice").await;
    let post = app.create_post(&alice, "Gallery", &[]).await;
    let count = 6;
    for index in 0..count {
        let uploaded = app
            .upload_image(
                Some(&alice),
                post,
                &format!("photo {index}"),
                "photo.png",
                png(1000 + index, 700),
            )
            .await;
        assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    }
    let group = format!("images-{}", Uuid::new_v4().simple());
    let mut worker = worker_process(&app, &group).await;
    // Killed (SIGKILL) as soon as it has stored anything: mid-batch, its
    // offsets uncommitted.
    eventually(
        Duration::from_secs(60),
        "the worker to start on the batch",
        || async { !app.stored_objects("renditions").is_empty() },
    )
    .await;
    worker.kill().await;
    let _worker = worker_process(&app, &group).await;

    let images = settled(&app, &alice, post, count as usize).await;
    for image in &images {
        assert_eq!(image["status"], "READY", "{image}");
        assert_eq!(image["renditions"].as_array().unwrap().len(), 4, "{image}");
    }
    // One outcome per image, however often the batch was delivered.
    let outcomes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type IN ('PostImageProcessed', 'PostImageRejected')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, i64::from(count));
    // Two widths (320, 960) in two formats, per image, and nothing else.
    assert_eq!(app.stored_objects("renditions").len(), count as usize * 4);
}

#[tokio::test]
async fn a_drafts_image_is_served_only_to_those_who_may_see_the_draft() {
    let app = app_with_worker().await;
    let (_, alice) = app.signed_in("alice").await;
    let (_, bob) = app.signed_in("bob").await;
    let post = app.create_post(&alice, "Secret", &[]).await;
    let uploaded = app
        .upload_image(Some(&alice), post, "", "a.png", png(400, 300))
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    let images = settled(&app, &alice, post, 1).await;
    let url = format!(
        "{}{}",
        app.query_url(),
        images[0]["renditions"][0]["url"].as_str().unwrap()
    );
    let fetch = |session: Option<&Session>| {
        let mut request = app.http.get(&url);
        if let Some(session) = session {
            request = request.bearer_auth(&session.access_token);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(fetch(None).await.status(), 404);
    assert_eq!(fetch(Some(&bob)).await.status(), 404);
    let own = fetch(Some(&alice)).await;
    assert_eq!(own.status(), 200);
    assert!(
        own.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );

    app.publish_post(&alice, post).await;
    app.drain().await;
    assert_eq!(fetch(None).await.status(), 200);
}

#[tokio::test]
async fn erasing_a_person_deletes_their_images_but_not_the_same_bytes_another_posted() {
    let app = app_with_worker().await;
    let (erin, erin_session) = app.signed_in("erin").await;
    let (_, olga) = app.signed_in("olga").await;
    let erins = app.published_post(&erin_session, "Erin's", &[]).await;
    let olgas = app.published_post(&olga, "Olga's", &[]).await;
    let own = png(500, 400);
    let shared = png(640, 480);
    for (session, post, bytes) in [
        (&erin_session, erins, own.clone()),
        (&erin_session, erins, shared.clone()),
        (&olga, olgas, shared.clone()),
    ] {
        let uploaded = app
            .upload_image(Some(session), post, "", "p.png", bytes)
            .await;
        assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    }
    settled(&app, &erin_session, erins, 2).await;
    let olgas_images = settled(&app, &olga, olgas, 1).await;
    assert_eq!(app.stored_objects("originals").len(), 2);

    let erased = app
        .graphql("mutation($id: ID!) { eraseUser(id: $id) { version } }")
        .variables(json!({"id": erin.id}))
        .bearer(&erin_session.access_token)
        .send()
        .await;
    assert!(
        erased.data()["eraseUser"]["version"].is_number(),
        "{:?}",
        erased.error()
    );

    // Erin's own image is gone from the store; the bytes Olga posted stay.
    assert_eq!(app.stored_objects("originals").len(), 1);
    // 640 px wide: one width (320) in two formats.
    assert_eq!(app.stored_objects("renditions").len(), 2);
    let url = format!(
        "{}{}",
        app.query_url(),
        olgas_images[0]["renditions"][0]["url"].as_str().unwrap()
    );
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 200);
}

/// An app taking two uploads a minute per person, and Alice's post on which
/// she has just made both.
async fn alice_at_her_upload_limit() -> (TestApp, Session, Uuid) {
    let app = TestApp::spawn_with(TestOptions {
        uploads_per_minute: 2,
        ..TestOptions::default()
    })
    .await;
    let (_, alice) = app.signed_in("alice").await;
    let post = app.create_post(&alice, "Busy", &[]).await;
    for width in [300, 301] {
        let uploaded = app
            .upload_image(Some(&alice), post, "", "a.png", png(width, 200))
            .await;
        assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    }
    (app, alice, post)
}

#[tokio::test]
async fn uploads_beyond_a_users_limit_are_rate_limited_and_store_nothing() {
    let (app, alice, post) = alice_at_her_upload_limit().await;
    let refused = app
        .upload_image(Some(&alice), post, "", "a.png", png(302, 200))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "RATE_LIMITED"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["retryAfterSeconds"]
            .as_u64()
            .unwrap_or_default()
            >= 1
    );
    assert_eq!(app.stored_objects("originals").len(), 2);
    // Another person's uploads are theirs to spend.
    let (_, bob) = app.signed_in("bob").await;
    let bobs = app.create_post(&bob, "Bob's", &[]).await;
    let uploaded = app
        .upload_image(Some(&bob), bobs, "", "b.png", png(300, 200))
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_limit_holds_across_replicas() {
    chronicle_tests::clear_of_a_minutes_end().await;
    let (app, alice, post) = alice_at_her_upload_limit().await;
    let other = app.spawn_extra_query_service().await;
    // Once the replicas have shared their counts, the second refuses her
    // too (alone it would take two more).
    tokio::time::sleep(query_service::rate_limit::SYNC_EVERY * 3).await;
    let first = app
        .upload_image_at(other.url(), Some(&alice), post, "", "a.png", png(302, 200))
        .await;
    tokio::time::sleep(query_service::rate_limit::SYNC_EVERY * 3).await;
    let refused = app
        .upload_image_at(other.url(), Some(&alice), post, "", "a.png", png(303, 200))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "RATE_LIMITED"),
        "the second replica took her upload (the first there: {})",
        first.status
    );
    assert!(app.stored_objects("originals").len() <= 3);
}
