//! What an upload's bytes are: one of the accepted formats (by content, not
//! by name or declared type), within the pixel limits (read from the header,
//! before any pixel is decoded), and readable to the end.

use chronicle_platform::image_codec;
use chronicle_schema::images::{ImageFormat, MAX_PIXELS, MAX_SIDE};

/// An upload's image, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefusal {
    #[error("is not a JPEG, PNG, WebP or GIF image")]
    Unsupported,
    #[error("is not a readable image ({0})")]
    Corrupt(String),
    #[error("is {width}×{height} pixels; at most {MAX_PIXELS} pixels and {MAX_SIDE} on a side")]
    TooManyPixels { width: u32, height: u32 },
}

pub fn inspect(bytes: &[u8]) -> Result<Inspected, ImageRefusal> {
    let format = image_codec::sniff(bytes).ok_or(ImageRefusal::Unsupported)?;
    let corrupt = |error: image::ImageError| ImageRefusal::Corrupt(error.to_string());
    let (width, height) = image_codec::stored_size(bytes, format).map_err(corrupt)?;
    if width == 0 || height == 0 {
        return Err(ImageRefusal::Corrupt("it has no pixels".into()));
    }
    if !image_codec::within_limits((width, height)) {
        return Err(ImageRefusal::TooManyPixels { width, height });
    }
    // Decoded to the end: a truncated or damaged file is refused now, not
    // found by the worker later. Its size is the upright one (a photo taken
    // sideways is shown turned).
    let upright = image_codec::decode_upright(bytes, format).map_err(corrupt)?;
    Ok(Inspected {
        format,
        width: upright.width(),
        height: upright.height(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn a_png_is_read_with_its_size() {
        assert_eq!(
            inspect(&png(64, 48)),
            Ok(Inspected {
                format: ImageFormat::Png,
                width: 64,
                height: 48
            })
        );
    }

    #[test]
    fn text_a_truncated_file_and_a_bomb_are_refused() {
        assert_eq!(inspect(b"hello, world"), Err(ImageRefusal::Unsupported));
        let whole = png(64, 48);
        assert!(matches!(
            inspect(&whole[..whole.len() / 2]),
            Err(ImageRefusal::Corrupt(_))
        ));
        // A PNG header claiming 100,000 × 100,000 pixels: refused unread.
        let mut bomb = whole.clone();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(
            inspect(&bomb),
            Err(ImageRefusal::TooManyPixels { .. }) | Err(ImageRefusal::Corrupt(_))
        ));
    }
}
