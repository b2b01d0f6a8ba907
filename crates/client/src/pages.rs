//! Paged reads of a key range at one revision.

use bytes::Bytes;

use crate::error::Result;
use crate::pb::RangeRequest;
use crate::{Client, KeyValue};

/// A paged read of `[key, range_end)`: each [`next_page`](Self::next_page)
/// asks for at most `page_size` keys starting after the last key returned,
/// all at the same revision (that of the first page unless given), so a
/// million-key range is read consistently without one huge response.
///
/// An empty `range_end` reads the single key `key`; `range_end == [0]` reads
/// to the end of the key space. If the revision is compacted away mid-read,
/// the page fails with [`EtcdError::Compacted`](crate::EtcdError::Compacted).
/// Each page is an idempotent range, so it fails over like
/// [`Client::range`].
#[derive(Debug)]
pub struct RangePages {
    client: Client,
    next_key: Bytes,
    range_end: Bytes,
    page_size: i64,
    keys_only: bool,
    revision: i64,
    done: bool,
}

impl RangePages {
    pub(crate) fn new(
        client: Client,
        key: Bytes,
        range_end: Bytes,
        page_size: i64,
        keys_only: bool,
        revision: i64,
    ) -> Self {
        RangePages {
            client,
            next_key: key,
            range_end,
            page_size: page_size.max(1),
            keys_only,
            revision,
            done: false,
        }
    }

    /// The revision the pages are read at (0 until the first page when none
    /// was given).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next page, or `None` when the range is exhausted. After an error
    /// the read can be resumed by calling again (same key, same revision).
    pub async fn next_page(&mut self) -> Result<Option<Vec<KeyValue>>> {
        if self.done {
            return Ok(None);
        }
        let req = RangeRequest {
            key: self.next_key.clone(),
            range_end: self.range_end.clone(),
            limit: self.page_size,
            revision: self.revision,
            keys_only: self.keys_only,
            ..Default::default()
        };
        let resp = self.client.range(req).await?;
        if self.revision == 0 {
            self.revision = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        match resp.kvs.last() {
            Some(last) if resp.more && !self.range_end.is_empty() => {
                let mut next = Vec::with_capacity(last.key.len() + 1);
                next.extend_from_slice(&last.key);
                next.push(0);
                self.next_key = Bytes::from(next);
            }
            _ => self.done = true,
        }
        if resp.kvs.is_empty() {
            return Ok(None);
        }
        Ok(Some(resp.kvs))
    }

    /// The pages as a `Stream` (ends after the first error).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Vec<KeyValue>>> {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut pages = state?;
            match pages.next_page().await {
                Ok(Some(page)) => Some((Ok(page), Some(pages))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
