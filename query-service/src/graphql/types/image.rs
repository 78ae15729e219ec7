use async_graphql::{Enum, ID, Object, SimpleObject};
use chronicle_schema::images::ImageFormat;
use chronicle_schema::read_models::posts::{ImageStatus, PostImage};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ImageStatus")]
pub enum ImageStatusValue {
    /// Uploaded; the image worker is making its renditions.
    Processing,
    Ready,
    /// The image worker could not read it (see `failure`).
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ImageFormat")]
pub enum ImageFormatValue {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl From<ImageFormat> for ImageFormatValue {
    fn from(format: ImageFormat) -> Self {
        match format {
            ImageFormat::Jpeg => ImageFormatValue::Jpeg,
            ImageFormat::Png => ImageFormatValue::Png,
            ImageFormat::Webp => ImageFormatValue::Webp,
            ImageFormat::Gif => ImageFormatValue::Gif,
        }
    }
}

/// One size and format of an image, served at `url` (immutable: cache it).
#[derive(SimpleObject)]
pub struct Rendition {
    pub url: String,
    pub width: i32,
    pub height: i32,
    pub format: ImageFormatValue,
}

pub struct Image(pub PostImage);

/// An image of a post. Markdown bodies place it with `![alt](image:<id>)`.
#[Object]
impl Image {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn status(&self) -> ImageStatusValue {
        match self.0.status {
            ImageStatus::Processing => ImageStatusValue::Processing,
            ImageStatus::Ready => ImageStatusValue::Ready,
            ImageStatus::Failed => ImageStatusValue::Failed,
        }
    }

    async fn alt(&self) -> &str {
        &self.0.alt
    }

    /// The original's size in pixels.
    async fn width(&self) -> i32 {
        self.0.width as i32
    }

    async fn height(&self) -> i32 {
        self.0.height as i32
    }

    /// Why processing failed, when it did.
    async fn failure(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// Narrowest first; empty until READY.
    async fn renditions(&self) -> Vec<Rendition> {
        self.0
            .renditions
            .iter()
            .map(|rendition| Rendition {
                url: format!("/images/{}/{}", self.0.hash, rendition.name()),
                width: rendition.width as i32,
                height: rendition.height as i32,
                format: rendition.format.into(),
            })
            .collect()
    }
}
