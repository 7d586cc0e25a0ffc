//! Images for multimodal reward servers, carried as data URLs
//! (`data:image/png;base64,...`): what every front end turns a file, a download or a picked
//! image into, and what the wire formats take apart (LightRFT sends the bare base64).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The largest image accepted (decoded bytes): servers resize anyway, and a larger one is more
/// likely a wrong file than a picture.
pub const MAX_IMAGE_BYTES: usize = 20 << 20;

/// What is wrong with an image.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

/// An image reference as an error names it: a data URL's (or long path's) first 60
/// characters and `…`.
pub fn shown(reference: &str) -> std::borrow::Cow<'_, str> {
    match reference.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &reference[..i]).into(),
        None => reference.into(),
    }
}

/// The image type of `bytes` from their first bytes: PNG, JPEG, GIF or WebP (what vLLM's and
/// LightRFT's image loaders read), else `None`.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The data URL of an image file's bytes, its type read from the bytes themselves.
pub fn data_url(bytes: &[u8]) -> Result<String, ImageError> {
    check_size(bytes.len())?;
    let mime = sniff(bytes).ok_or_else(|| ImageError("not a PNG, JPEG, GIF or WebP image".into()))?;
    Ok(format!("data:{mime};base64,{}", STANDARD.encode(bytes)))
}

fn check_size(n: usize) -> Result<(), ImageError> {
    if n > MAX_IMAGE_BYTES {
        return Err(ImageError(format!("{n} bytes, over the {} MiB an image may have", MAX_IMAGE_BYTES >> 20)));
    }
    Ok(())
}

/// A base64 data URL of an image: its type and its base64 text, checked (the base64 decodes,
/// and to an image of the type it claims).
pub fn parse_data_url(url: &str) -> Result<(&str, &str), ImageError> {
    let rest = url.strip_prefix("data:").ok_or_else(|| ImageError("not a data URL".into()))?;
    let (head, payload) = rest.split_once(',').ok_or_else(|| ImageError("a data URL needs a `,`".into()))?;
    let mime = head
        .strip_suffix(";base64")
        .ok_or_else(|| ImageError(format!("the data URL is not base64 (`data:{head},...`)")))?;
    check_size(payload.len() / 4 * 3)?;
    let bytes =
        STANDARD.decode(payload).map_err(|e| ImageError(format!("the data URL's base64 does not decode: {e}")))?;
    match sniff(&bytes) {
        Some(actual) if actual == mime => Ok((mime, payload)),
        Some(actual) => Err(ImageError(format!("the data URL says {mime} but holds {actual}"))),
        None => Err(ImageError(format!("the data URL ({mime}) holds no PNG, JPEG, GIF or WebP image"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn files_become_data_urls_and_back() {
        let url = data_url(PNG).unwrap();
        assert_eq!(url, format!("data:image/png;base64,{}", STANDARD.encode(PNG)));
        let (mime, b64) = parse_data_url(&url).unwrap();
        assert_eq!((mime, STANDARD.decode(b64).unwrap().as_slice()), ("image/png", PNG));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"GIF89a"), Some("image/gif"));
    }

    #[test]
    fn what_is_not_an_image_is_named() {
        assert_eq!(data_url(b"hello").unwrap_err().0, "not a PNG, JPEG, GIF or WebP image");
        let e = parse_data_url(&format!("data:image/jpeg;base64,{}", STANDARD.encode(PNG))).unwrap_err();
        assert_eq!(e.0, "the data URL says image/jpeg but holds image/png");
        assert!(parse_data_url("data:image/png,abc").unwrap_err().0.contains("not base64"));
        assert!(parse_data_url("data:image/png;base64,%%%").unwrap_err().0.contains("does not decode"));
        assert_eq!(parse_data_url("x.png").unwrap_err().0, "not a data URL");
        assert!(data_url(&vec![0u8; MAX_IMAGE_BYTES + 1]).unwrap_err().0.contains("over the 20 MiB"));
        assert_eq!(shown("a.png"), "a.png");
        assert_eq!(shown(&"x".repeat(61)), format!("{}…", "x".repeat(60)));
    }
}
