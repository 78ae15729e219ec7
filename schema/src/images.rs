//! Images in posts: what the upload, the image worker and the readers agree
//! on. Originals and renditions are content-addressed (SHA-256 of the
//! original); a rendition is named by its width and format, so its key, its
//! URL and its `ETag` follow from what the events say.

use serde::{Deserialize, Serialize};

/// At most this many bytes in an upload.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// An upload's whole multipart body: the file, field names, `postId`, `alt`.
pub const MAX_UPLOAD_BODY_BYTES: usize = MAX_UPLOAD_BYTES + 64 * 1024;
/// At most this many pixels in an original: a small file that decodes to a
/// huge bitmap (a decompression bomb) is refused from its header alone.
pub const MAX_PIXELS: u64 = 50_000_000;
/// And at most this long on either side.
pub const MAX_SIDE: u32 = 16_384;
/// At most this many images per post.
pub const MAX_IMAGES_PER_POST: usize = 20;
/// At most this many characters of alt text.
pub const MAX_ALT_CHARS: usize = 1_000;

/// The widths renditions are made at (never wider than the original; an
/// original narrower than the first gets one rendition at its own width).
pub const RENDITION_WIDTHS: [u32; 3] = [320, 960, 1920];
/// Each width is made in each of these.
pub const RENDITION_FORMATS: [ImageFormat; 2] = [ImageFormat::Webp, ImageFormat::Jpeg];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
        }
    }

    pub fn from_extension(extension: &str) -> Option<ImageFormat> {
        match extension {
            "jpg" => Some(ImageFormat::Jpeg),
            "png" => Some(ImageFormat::Png),
            "webp" => Some(ImageFormat::Webp),
            "gif" => Some(ImageFormat::Gif),
            _ => None,
        }
    }
}

/// What an upload read from an image's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedImage {
    pub image_id: uuid::Uuid,
    pub hash: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// What the image worker made of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ImageOutcome {
    Processed { renditions: Vec<Rendition> },
    Rejected { reason: String },
}

/// One rendition of an image, as `PostImageProcessed` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    pub format: ImageFormat,
    pub bytes: u64,
}

impl Rendition {
    /// Its name in keys and URLs: `w960.webp`.
    pub fn name(&self) -> String {
        rendition_name(self.width, self.format)
    }
}

pub fn rendition_name(width: u32, format: ImageFormat) -> String {
    format!("w{width}.{}", format.extension())
}

/// A rendition name's width and format; `None` for anything else (so a path
/// from a URL never names another key).
pub fn parse_rendition_name(name: &str) -> Option<(u32, ImageFormat)> {
    let (width, extension) = name.strip_prefix('w')?.split_once('.')?;
    if width.is_empty() || !width.bytes().all(|byte| byte.is_ascii_digit()) || width.len() > 5 {
        return None;
    }
    Some((width.parse().ok()?, ImageFormat::from_extension(extension)?))
}

/// Whether `hash` is a SHA-256 in lowercase hex (and so safe in a key).
pub fn is_content_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Where an original is stored.
pub fn original_key(hash: &str) -> String {
    format!("originals/{hash}")
}

/// Where a rendition is stored.
pub fn rendition_key(hash: &str, name: &str) -> String {
    format!("{}/{name}", renditions_prefix(hash))
}

/// Where every rendition of an original is stored.
pub fn renditions_prefix(hash: &str) -> String {
    format!("renditions/{hash}")
}

/// The widths to make for an original `width` pixels wide.
pub fn rendition_widths(width: u32) -> Vec<u32> {
    let mut widths: Vec<u32> = RENDITION_WIDTHS
        .into_iter()
        .filter(|&target| target <= width)
        .collect();
    if widths.is_empty() {
        widths.push(width.max(1));
    }
    widths
}

/// The height of a rendition `width` wide, keeping the aspect ratio.
pub fn scaled_height(original: (u32, u32), width: u32) -> u32 {
    let (original_width, original_height) = original;
    ((u64::from(original_height) * u64::from(width) + u64::from(original_width) / 2)
        / u64::from(original_width.max(1)))
    .max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendition_names_round_trip_and_nothing_else_parses() {
        assert_eq!(rendition_name(960, ImageFormat::Webp), "w960.webp");
        assert_eq!(
            parse_rendition_name("w960.webp"),
            Some((960, ImageFormat::Webp))
        );
        for hostile in [
            "w.webp",
            "960.webp",
            "w960.exe",
            "w960",
            "w-1.jpg",
            "w9.jpg/../x",
            "w123456.jpg",
        ] {
            assert_eq!(parse_rendition_name(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn renditions_are_never_wider_than_the_original() {
        assert_eq!(rendition_widths(4000), vec![320, 960, 1920]);
        assert_eq!(rendition_widths(1000), vec![320, 960]);
        assert_eq!(rendition_widths(200), vec![200]);
        assert_eq!(scaled_height((4000, 3000), 320), 240);
        assert_eq!(scaled_height((10, 1), 320), 32);
        assert_eq!(scaled_height((10_000, 1), 320), 1);
    }

    #[test]
    fn only_a_lowercase_sha256_is_a_content_hash() {
        assert!(is_content_hash(&"ab".repeat(32)));
        assert!(!is_content_hash(&"AB".repeat(32)));
        assert!(!is_content_hash("../../etc/passwd"));
    }
}
