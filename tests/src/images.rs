//! Images for tests, made here (never downloaded): a photo-like JPEG with
//! EXIF (a GPS position, an orientation), a decompression bomb, and
//! uploads through the public API.

use std::io::Cursor;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use uuid::Uuid;

use crate::app::TestApp;
use crate::graphql::Session;

/// The GPS latitude the EXIF block carries: 48°51'29" as rationals.
pub const GPS_LATITUDE: [u32; 6] = [48, 1, 51, 1, 29, 1];

/// A gradient `width` × `height`, as stored pixels.
pub fn pixels(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            128,
        ])
    })
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    pixels(width, height)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode a PNG");
    bytes
}

/// A JPEG `width` × `height` as stored, with an EXIF block giving a GPS
/// latitude and `orientation` (6: shown turned 90° clockwise).
pub fn jpeg_with_exif(width: u32, height: u32, orientation: u16) -> Vec<u8> {
    let mut encoded = Vec::new();
    pixels(width, height)
        .write_to(&mut Cursor::new(&mut encoded), image::ImageFormat::Jpeg)
        .expect("encode a JPEG");
    // TIFF, little-endian: IFD0 at 8 (Orientation, GPS IFD pointer), the GPS
    // IFD at 38 (latitude ref, latitude), its rationals at 68.
    let mut tiff: Vec<u8> = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    let entry = |tiff: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        tiff.extend(tag.to_le_bytes());
        tiff.extend(kind.to_le_bytes());
        tiff.extend(count.to_le_bytes());
        tiff.extend(value);
    };
    tiff.extend(2u16.to_le_bytes());
    let mut orientation_value = [0u8; 4];
    orientation_value[..2].copy_from_slice(&orientation.to_le_bytes());
    entry(&mut tiff, 0x0112, 3, 1, orientation_value);
    entry(&mut tiff, 0x8825, 4, 1, 38u32.to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    tiff.extend(2u16.to_le_bytes());
    entry(&mut tiff, 0x0001, 2, 2, *b"N\0\0\0");
    entry(&mut tiff, 0x0002, 5, 3, 68u32.to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    for value in GPS_LATITUDE {
        tiff.extend(value.to_le_bytes());
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
    jpeg.extend(((app1.len() + 2) as u16).to_be_bytes());
    jpeg.extend(app1);
    jpeg.extend(&encoded[2..]);
    jpeg
}

/// Whether `bytes` hold the EXIF GPS latitude's rationals.
pub fn has_gps(bytes: &[u8]) -> bool {
    let needle: Vec<u8> = GPS_LATITUDE
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    bytes.windows(needle.len()).any(|window| window == needle)
}

/// A valid PNG that decodes to 8,000 × 8,000 grey pixels (64 MP) in a few
/// tens of kilobytes.
pub fn bomb() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::GrayImage::new(8_000, 8_000)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode the bomb");
    bytes
}

/// What an upload answered: its status and JSON body.
pub struct Uploaded {
    pub status: u16,
    pub body: Value,
}

impl Uploaded {
    pub fn image_id(&self) -> Uuid {
        self.body["imageId"]
            .as_str()
            .unwrap_or_else(|| panic!("an image id in {}", self.body))
            .parse()
            .unwrap()
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    /// `POST /images` as a browser form would send it.
    pub async fn upload_image(
        &self,
        session: Option<&Session>,
        post_id: Uuid,
        alt: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Uploaded {
        self.upload_image_at(self.query_url(), session, post_id, alt, file_name, bytes)
            .await
    }

    /// An upload through the query-service at `query_url` (a replica).
    pub async fn upload_image_at(
        &self,
        query_url: &str,
        session: Option<&Session>,
        post_id: Uuid,
        alt: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Uploaded {
        let form = Form::new()
            .text("postId", post_id.to_string())
            .text("alt", alt.to_owned())
            .part("file", Part::bytes(bytes).file_name(file_name.to_owned()));
        let mut request = self
            .http
            .post(format!("{query_url}/images"))
            .multipart(form);
        if let Some(session) = session {
            request = request.bearer_auth(&session.access_token);
        }
        let response = request.send().await.expect("the upload is answered");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Uploaded { status, body }
    }

    /// Every object stored under `prefix` of the object store.
    pub fn stored_objects(&self, prefix: &str) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if !is_staging(&path) {
                    found.push(path);
                }
            }
        }
        // A write in progress, or one a killed process left behind:
        // object_store's local store writes `<name>#<digits>` and renames it
        // into place, and lists no such file as an object.
        fn is_staging(path: &std::path::Path) -> bool {
            path.file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.split_once('#'))
                .is_some_and(|(_, suffix)| {
                    !suffix.is_empty() && suffix.bytes().all(|byte| byte.is_ascii_digit())
                })
        }
        let mut found = Vec::new();
        walk(&self.object_store_dir.join(prefix), &mut found);
        found
    }
}
