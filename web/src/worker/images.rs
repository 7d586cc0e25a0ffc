//! The images of conversations bound for a remote endpoint, as data URLs: data URLs (what the
//! page's picker makes) are checked, http(s) URLs downloaded (as the server allows: CORS), and
//! file paths refused — the browser cannot read them (`rewardlens score` can).

use super::error::{Res, WorkerError};
use super::queue::Engine;
use js_sys::Uint8Array;
use rewardlens_core::image::{data_url, parse_data_url, MAX_IMAGE_BYTES};
use rewardlens_core::Message;
use std::borrow::Cow;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

impl Engine {
    /// `convs` with every image a data URL (borrowed when none has images).
    pub(super) async fn with_data_urls<'a>(&self, convs: &'a [Vec<Message>]) -> Res<Cow<'a, [Vec<Message>]>> {
        if convs.iter().flatten().all(|m| m.images.is_empty()) {
            return Ok(Cow::Borrowed(convs));
        }
        let mut owned = convs.to_vec();
        for image in owned.iter_mut().flatten().flat_map(|m| m.images.iter_mut()) {
            if image.starts_with("data:") {
                parse_data_url(image).map_err(|e| image_error(image, e))?;
            } else if image.starts_with("http://") || image.starts_with("https://") {
                *image = self.download_image(image).await.map_err(|e| image_error(image, e))?;
            } else {
                return Err(image_error(
                    image,
                    "a file path cannot be read in the browser: pick the file, or give a data URL or an http(s) URL",
                ));
            }
        }
        Ok(Cow::Owned(owned))
    }

    async fn download_image(&self, url: &str) -> Result<String, String> {
        let failed = |e: wasm_bindgen::JsValue| {
            format!("cannot download it ({}); the server must allow CORS", super::queue::js_text(&e))
        };
        let resp: Response =
            JsFuture::from(self.scope.fetch_with_str(url)).await.map_err(failed)?.dyn_into().map_err(failed)?;
        if !resp.ok() {
            return Err(format!("the download answered HTTP {}", resp.status()));
        }
        let buf = JsFuture::from(resp.array_buffer().map_err(failed)?).await.map_err(failed)?;
        let bytes = Uint8Array::new(&buf);
        if bytes.length() as usize > MAX_IMAGE_BYTES {
            return Err(format!("{} bytes, over the {} MiB an image may have", bytes.length(), MAX_IMAGE_BYTES >> 20));
        }
        data_url(&bytes.to_vec()).map_err(|e| e.to_string())
    }
}

fn image_error(image: &str, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Image(format!("image `{}`: {e}", rewardlens_core::image::shown(image)))
}
