//! Renditions of an original: decoded once (within the upload limits),
//! turned upright by its EXIF orientation, then resized down width by width
//! (each from the one before, so each step is small) and encoded as WebP and
//! JPEG. Encoders are given pixels only: no EXIF, XMP or ICC block, so a
//! photo's GPS position and camera serial never reach a rendition.

use chronicle_platform::image_codec;
use chronicle_schema::images::{
    ImageFormat, RENDITION_FORMATS, Rendition, rendition_widths, scaled_height,
};
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;
use image::codecs::jpeg::JpegEncoder;

const JPEG_QUALITY: u8 = 82;
const WEBP_QUALITY: f32 = 80.0;

/// One rendition and its encoded bytes.
pub struct Made {
    pub rendition: Rendition,
    pub bytes: Vec<u8>,
}

/// Why an original has no renditions (the image is FAILED, for good).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the original is not a readable image: {0}")]
    Decode(String),
    #[error("a rendition could not be encoded: {0}")]
    Encode(String),
}

/// Decodes an original upright: its pixels, the EXIF orientation applied.
pub fn decode(original: &[u8], format: ImageFormat) -> Result<DynamicImage, Unreadable> {
    image_codec::decode_upright(original, format)
        .map_err(|error| Unreadable::Decode(error.to_string()))
}

/// Every rendition of an upright image, widest first.
pub fn make(image: &DynamicImage) -> Result<Vec<Made>, Unreadable> {
    let has_alpha = image.color().has_alpha();
    // 8 bits per channel, alpha kept where there is one (WebP keeps it; JPEG
    // gets the pixels flattened onto white).
    let source = if has_alpha {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.to_rgb8())
    };
    let pixel_type = if has_alpha {
        PixelType::U8x4
    } else {
        PixelType::U8x3
    };
    let original = (source.width(), source.height());
    let mut widths = rendition_widths(original.0);
    widths.reverse();
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    let mut made = Vec::with_capacity(widths.len() * RENDITION_FORMATS.len());
    let mut previous = source;
    for width in widths {
        let height = scaled_height(original, width);
        let resized = if (previous.width(), previous.height()) == (width, height) {
            previous.clone()
        } else {
            let mut target = Image::new(width, height, pixel_type);
            resizer
                .resize(&previous, &mut target, &options)
                .map_err(|error| Unreadable::Encode(error.to_string()))?;
            let buffer = target.into_vec();
            if has_alpha {
                DynamicImage::ImageRgba8(
                    image::RgbaImage::from_raw(width, height, buffer)
                        .expect("sized by the resizer"),
                )
            } else {
                DynamicImage::ImageRgb8(
                    image::RgbImage::from_raw(width, height, buffer).expect("sized by the resizer"),
                )
            }
        };
        for format in RENDITION_FORMATS {
            let bytes = encode(&resized, format)?;
            made.push(Made {
                rendition: Rendition {
                    width,
                    height,
                    format,
                    bytes: bytes.len() as u64,
                },
                bytes,
            });
        }
        previous = resized;
    }
    Ok(made)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, Unreadable> {
    let encode_error = |error: String| Unreadable::Encode(error);
    match format {
        ImageFormat::Webp => {
            let encoder = match image {
                DynamicImage::ImageRgba8(rgba) => {
                    webp::Encoder::from_rgba(rgba.as_raw(), rgba.width(), rgba.height())
                }
                DynamicImage::ImageRgb8(rgb) => {
                    webp::Encoder::from_rgb(rgb.as_raw(), rgb.width(), rgb.height())
                }
                other => {
                    return Err(encode_error(format!(
                        "unexpected pixels {:?}",
                        other.color()
                    )));
                }
            };
            Ok(encoder.encode(WEBP_QUALITY).to_vec())
        }
        ImageFormat::Jpeg => {
            let rgb = match image {
                DynamicImage::ImageRgba8(rgba) => flatten_on_white(rgba),
                other => other.to_rgb8(),
            };
            let mut bytes = Vec::new();
            JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
                .encode_image(&rgb)
                .map_err(|error| encode_error(error.to_string()))?;
            Ok(bytes)
        }
        other => Err(encode_error(format!(
            "renditions are not made as {other:?}"
        ))),
    }
}

fn flatten_on_white(rgba: &image::RgbaImage) -> image::RgbImage {
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [red, green, blue, alpha] = rgba.get_pixel(x, y).0;
        let over_white = |channel: u8| {
            ((u16::from(channel) * u16::from(alpha) + 255 * (255 - u16::from(alpha)) + 127) / 255)
                as u8
        };
        image::Rgb([over_white(red), over_white(green), over_white(blue)])
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn photo(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        }))
    }

    #[test]
    fn each_width_is_made_in_each_format_never_wider_than_the_original() {
        let made = make(&photo(1000, 500)).unwrap();
        let sizes: Vec<(u32, u32, ImageFormat)> = made
            .iter()
            .map(|made| {
                (
                    made.rendition.width,
                    made.rendition.height,
                    made.rendition.format,
                )
            })
            .collect();
        assert_eq!(
            sizes,
            vec![
                (960, 480, ImageFormat::Webp),
                (960, 480, ImageFormat::Jpeg),
                (320, 160, ImageFormat::Webp),
                (320, 160, ImageFormat::Jpeg),
            ]
        );
        for made in &made {
            let read = image::load_from_memory(&made.bytes).unwrap();
            assert_eq!(
                (read.width(), read.height()),
                (made.rendition.width, made.rendition.height)
            );
            assert_eq!(made.rendition.bytes, made.bytes.len() as u64);
        }
    }

    #[test]
    fn transparency_is_kept_in_webp_and_flattened_on_white_in_jpeg() {
        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            400,
            200,
            image::Rgba([0, 0, 0, 0]),
        ));
        let made = make(&clear).unwrap();
        let jpeg = made
            .iter()
            .find(|made| made.rendition.format == ImageFormat::Jpeg)
            .unwrap();
        let pixel = image::load_from_memory(&jpeg.bytes)
            .unwrap()
            .to_rgb8()
            .get_pixel(10, 10)
            .0;
        assert!(pixel.iter().all(|&channel| channel > 245), "{pixel:?}");
    }

    #[test]
    fn a_truncated_original_is_unreadable() {
        let mut bytes = Vec::new();
        photo(64, 64)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(
            decode(&bytes, ImageFormat::Png),
            Err(Unreadable::Decode(_))
        ));
    }
}
