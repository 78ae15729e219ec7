//! Reading an image the one way Chronicle does, wherever it is read (the
//! upload's check, the image worker): its format from its content, its size
//! from its header, its pixels within the upload limits and turned upright
//! by its EXIF orientation.

use std::io::Cursor;

use chronicle_schema::images::{ImageFormat, MAX_PIXELS, MAX_SIDE};
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits};

/// The format of `bytes`, if it is one uploads may have.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Jpeg => Some(ImageFormat::Jpeg),
        image::ImageFormat::Png => Some(ImageFormat::Png),
        image::ImageFormat::WebP => Some(ImageFormat::Webp),
        image::ImageFormat::Gif => Some(ImageFormat::Gif),
        _ => None,
    }
}

/// The stored size, from the header alone (nothing is decoded).
pub fn stored_size(bytes: &[u8], format: ImageFormat) -> Result<(u32, u32), ImageError> {
    ImageReader::with_format(Cursor::new(bytes), codec(format)).into_dimensions()
}

/// Whether a stored size is within the limits (a decompression bomb is not).
pub fn within_limits((width, height): (u32, u32)) -> bool {
    width <= MAX_SIDE && height <= MAX_SIDE && u64::from(width) * u64::from(height) <= MAX_PIXELS
}

/// Every pixel, decoded within the limits (they hold even where a header
/// lies) and turned upright.
pub fn decode_upright(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), codec(format));
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn codec(format: ImageFormat) -> image::ImageFormat {
    match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Gif => image::ImageFormat::Gif,
    }
}
