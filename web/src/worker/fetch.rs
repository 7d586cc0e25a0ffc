//! Downloads with progress and their byte budget, through the browser's Cache Storage (a model
//! downloads once), and the cache's size.

use super::download::{status_error, DownloadBudget};
use super::error::{Res, WorkerError};
use super::queue::{js_text, Auth, Engine};
use crate::protocol::FromWorker;
use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, Headers, ReadableStreamDefaultReader, RequestInit, Response, ResponseInit};

pub(super) const CACHE_NAME: &str = "rewardlens-models-v1";
/// Header recording an entry's size, so the cache size is known without reading bodies.
const SIZE_HEADER: &str = "x-rewardlens-bytes";

impl Engine {
    async fn cache(&self) -> Option<Cache> {
        let caches = self.scope.caches().ok()?;
        JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
    }

    pub(super) async fn cache_size(&self) -> Option<(u64, u64)> {
        let cache = self.cache().await?;
        let keys: Array = JsFuture::from(cache.keys()).await.ok()?.dyn_into().ok()?;
        let mut bytes = 0;
        for req in keys.iter() {
            let req: web_sys::Request = req.dyn_into().ok()?;
            let resp: Response = JsFuture::from(cache.match_with_str(&req.url())).await.ok()?.dyn_into().ok()?;
            bytes += resp.headers().get(SIZE_HEADER).ok().flatten().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Some((bytes, keys.length() as u64))
    }

    /// Fetches `url` (from the cache when it is there), at most `cap` bytes. `Ok(None)`: an
    /// optional file that does not exist. The token is only sent where `auth` allows.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        &self,
        id: u64,
        url: &str,
        label: &str,
        auth: Auth<'_>,
        optional: bool,
        cap: u64,
        stats: &mut (u64, u64),
    ) -> Res<Option<Uint8Array>> {
        let mut budget = DownloadBudget::new(label, cap);
        let cache = self.cache().await;
        if let Some(cache) = &cache {
            if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
                if let Ok(resp) = hit.dyn_into::<Response>() {
                    if resp.status() == 404 && optional {
                        return Ok(None);
                    }
                    if resp.ok() {
                        let size = resp.headers().get(SIZE_HEADER).ok().flatten().and_then(|v| v.parse::<u64>().ok());
                        budget.declared(size)?;
                        let cache_err = |e: JsValue| WorkerError::Cache(js_text(&e));
                        let buf = JsFuture::from(resp.array_buffer().map_err(cache_err)?).await.map_err(cache_err)?;
                        let bytes = Uint8Array::new(&buf);
                        // An entry without the size header (an older version's) is capped here.
                        budget.add(bytes.length() as u64)?;
                        stats.1 += bytes.length() as u64;
                        return Ok(Some(bytes));
                    }
                }
            }
        }

        let init = RequestInit::new();
        let hub = auth.allowed(url);
        if hub && !auth.token.is_empty() {
            let h = Headers::new().map_err(|e| WorkerError::Network(js_text(&e)))?;
            let _ = h.set("Authorization", &format!("Bearer {}", auth.token));
            init.set_headers(&h);
        }
        let fetched = JsFuture::from(self.scope.fetch_with_str_and_init(url, &init)).await;
        if fetched.is_err() && optional {
            // Some hosts answer a missing file without CORS headers, which fetch reports as a
            // network error; an optional file is then treated as absent (a required file
            // still reports the error).
            return Ok(None);
        }
        let resp: Response = fetched
            .map_err(|e| {
                WorkerError::Network(format!(
                    "could not fetch {url}: the server is unreachable or refused cross-origin access (CORS). \
                     A server hosting models for the browser must send Access-Control-Allow-Origin. ({})",
                    js_text(&e)
                ))
            })?
            .dyn_into()
            .map_err(|_| WorkerError::Network("fetch did not return a Response".into()))?;
        let status = resp.status();
        if status == 404 && optional {
            if let Some(cache) = &cache {
                // Remember the absence too, so a cached model loads with no request at all.
                let init = ResponseInit::new();
                init.set_status(404);
                if let Ok(r) = Response::new_with_opt_str_and_init(None, &init) {
                    let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
                }
            }
            return Ok(None);
        }
        if !resp.ok() {
            return Err(status_error(url, label, status, &resp.status_text(), hub, !auth.token.is_empty()));
        }
        let total = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
        budget.declared(total)?;
        let body = resp.body().ok_or_else(|| WorkerError::Http(format!("{url}: empty response body")))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        // With a Content-Length (checked above) the bytes go straight into one array of that
        // size; without one they are kept as chunks (at most `cap` bytes) and joined at the end.
        let whole = total.map(|t| Uint8Array::new_with_length(t as u32));
        let chunks = Array::new();
        let (mut done_bytes, started, mut last_post) = (0u64, self.now(), 0f64);
        loop {
            let chunk = JsFuture::from(reader.read())
                .await
                .map_err(|e| WorkerError::Network(format!("download of {url} broke off: {}", js_text(&e))))?;
            if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
                break;
            }
            let value: Uint8Array =
                Reflect::get(&chunk, &"value".into()).map_err(|e| WorkerError::Network(js_text(&e)))?.unchecked_into();
            let n = value.length() as u64;
            if let Err(e) = budget.add(n) {
                let _ = reader.cancel();
                return Err(e);
            }
            match (&whole, total) {
                (Some(all), Some(t)) if done_bytes + n <= t => all.set(&value, done_bytes as u32),
                (Some(_), Some(t)) => {
                    let _ = reader.cancel();
                    return Err(WorkerError::Network(format!(
                        "{url} sent more than the {t} bytes its Content-Length announced"
                    )));
                }
                _ => {
                    chunks.push(&value);
                }
            }
            done_bytes += n;
            let now = self.now();
            if now - last_post > 100.0 {
                last_post = now;
                let rate = self.per_second(done_bytes as f64, started);
                self.post(&FromWorker::Progress { id, stage: label.into(), done: done_bytes, total, rate });
                if self.cancelled.borrow().contains(&id) {
                    let _ = reader.cancel();
                    self.check_cancel(id)?;
                }
            }
        }
        if let Some(t) = total.filter(|&t| t != done_bytes) {
            return Err(WorkerError::Network(format!(
                "download of {url} ended after {done_bytes} of {t} bytes; try again"
            )));
        }
        let rate = self.per_second(done_bytes as f64, started);
        self.post(&FromWorker::Progress { id, stage: label.into(), done: done_bytes, total: Some(done_bytes), rate });
        stats.0 += done_bytes;
        // One contiguous array (a Blob of a large download may be paged to disk by the browser
        // and then fail to read back).
        let all = match whole {
            Some(all) => all,
            None => {
                // `done_bytes` is within the budget, so within u32.
                let all = Uint8Array::new_with_length(done_bytes as u32);
                let mut at = 0u32;
                for c in chunks.iter() {
                    let c: Uint8Array = c.unchecked_into();
                    all.set(&c, at);
                    at += c.length();
                }
                all
            }
        };
        drop(chunks);
        if let Some(cache) = &cache {
            let init = ResponseInit::new();
            init.set_status(200);
            if let Ok(h) = Headers::new() {
                let _ = h.set(SIZE_HEADER, &done_bytes.to_string());
                init.set_headers(&h);
            }
            if let Ok(r) = streamed_response(&all, &init) {
                // A full disk (quota) only costs the next reload a download.
                let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
            }
        }
        Ok(Some(all))
    }
}

/// A response whose body is `bytes`, for the cache, without a second copy of them in this
/// worker's memory. `new Response(bytes)` copies the whole file into the JS heap, and in a
/// pipeline that copy is garbage no one collects while it matters: the coordinator allocates
/// nothing more (the stages grow their own heaps), so it stayed alive through every stage's
/// load, one file's worth of the N-worker page's peak. A stream's chunk is read by reference,
/// in pieces, by the cache's writer.
fn streamed_response(bytes: &Uint8Array, init: &ResponseInit) -> Result<Response, JsValue> {
    let chunk = bytes.clone();
    let start = Closure::once_into_js(move |controller: web_sys::ReadableStreamDefaultController| {
        // A non-byte stream: the chunk is enqueued as it is, not transferred (the caller keeps
        // `bytes` usable).
        let _ = controller.enqueue_with_chunk(&chunk);
        let _ = controller.close();
    });
    let source = js_sys::Object::new();
    Reflect::set(&source, &"start".into(), &start)?;
    let stream = web_sys::ReadableStream::new_with_underlying_source(&source)?;
    Response::new_with_opt_readable_stream_and_init(Some(&stream), init)
}
