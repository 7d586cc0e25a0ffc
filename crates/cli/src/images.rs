//! The images of input lines — file paths, http(s) URLs or data URLs — read into data URLs
//! before a conversation goes to a remote endpoint, so every endpoint of a run receives the same
//! bytes (LightRFT's servers need them inline anyway). Paths are relative to the input file's
//! folder, as in LLaVA-style datasets.

use anyhow::{bail, Context, Result};
use rewardlens_core::image::{data_url, parse_data_url, shown, MAX_IMAGE_BYTES};
use rewardlens_core::Message;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Images read so far are kept (the prompt's image recurs in every response of a line); past
/// this many the cache starts over.
const CACHED_IMAGES: usize = 64;

pub(crate) struct ImageReader {
    base: PathBuf,
    cache: RefCell<HashMap<String, String>>,
    fetch: RefCell<Option<(tokio::runtime::Runtime, reqwest::Client)>>,
}

impl ImageReader {
    /// For the lines of `input` (`-`: standard input, paths relative to the working folder).
    pub(crate) fn new(input: &Path) -> Self {
        let base = match input.parent() {
            Some(p) if input.as_os_str() != "-" => p.to_path_buf(),
            _ => PathBuf::new(),
        };
        Self { base, cache: RefCell::default(), fetch: RefCell::default() }
    }

    /// `conversation` with every image as a data URL (borrowed when it has none).
    pub(crate) fn resolve<'a>(&self, conversation: &'a [Message]) -> Result<Cow<'a, [Message]>> {
        if conversation.iter().all(|m| m.images.is_empty()) {
            return Ok(Cow::Borrowed(conversation));
        }
        let mut owned = conversation.to_vec();
        for m in &mut owned {
            for image in &mut m.images {
                *image = self.data_url(image).with_context(|| format!("image `{}`", shown(image)))?;
            }
        }
        Ok(Cow::Owned(owned))
    }

    fn data_url(&self, reference: &str) -> Result<String> {
        if let Some(url) = self.cache.borrow().get(reference) {
            return Ok(url.clone());
        }
        let url = if reference.starts_with("data:") {
            parse_data_url(reference)?;
            reference.to_owned()
        } else if reference.starts_with("http://") || reference.starts_with("https://") {
            data_url(&self.download(reference)?)?
        } else {
            let path = self.base.join(reference.strip_prefix("file://").unwrap_or(reference));
            let len = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len();
            if len > MAX_IMAGE_BYTES as u64 {
                bail!("{} is {len} bytes, over the {} MiB an image may have", path.display(), MAX_IMAGE_BYTES >> 20);
            }
            data_url(&std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)?
        };
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHED_IMAGES {
            cache.clear();
        }
        cache.insert(reference.to_owned(), url.clone());
        Ok(url)
    }

    fn download(&self, url: &str) -> Result<Vec<u8>> {
        let mut fetch = self.fetch.borrow_mut();
        if fetch.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
            *fetch = Some((runtime, client));
        }
        let (runtime, client) = fetch.as_ref().expect("set above");
        runtime.block_on(async {
            let mut resp = client.get(url).send().await?.error_for_status()?;
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_IMAGE_BYTES {
                    bail!("the download is over the {} MiB an image may have", MAX_IMAGE_BYTES >> 20);
                }
            }
            Ok(bytes)
        })
    }
}
