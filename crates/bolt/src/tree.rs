//! Pages, buckets, streaming iteration, point lookups and the page map.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::error::{Result, escape};
use crate::file::{BoltFile, PAGE_HEADER};

const BRANCH_FLAG: u16 = 0x01;
const LEAF_FLAG: u16 = 0x02;
const ELEM_SIZE: usize = 16;
const BUCKET_ELEM_FLAG: u32 = 0x01;
const BUCKET_HEADER: usize = 16;
/// Trees deeper than this are treated as corrupt: even with 4 KiB pages and minimal fan-out
/// a real bbolt tree stays far below it. It also bounds the pages held by one iterator.
const MAX_DEPTH: usize = 64;

/// Where a page reference came from (page id, absolute offset), for error context.
type Origin = (u64, u64);

fn le_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Kind of a B+tree page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Interior page: elements point to child pages.
    Branch,
    /// Leaf page: elements hold keys and values (or nested bucket headers).
    Leaf,
}

/// A validated branch or leaf page (or an inline bucket's page image).
#[derive(Clone)]
pub(crate) struct Page {
    /// Page id; for an inline page, the id of the page holding the bucket value.
    id: u64,
    /// Absolute file offset of `data[0]`.
    base: u64,
    data: Bytes,
    kind: PageKind,
    count: usize,
    overflow: u32,
}

impl Page {
    fn parse(db: &BoltFile, id: u64, base: u64, data: Bytes, inline: bool) -> Result<Page> {
        if data.len() < PAGE_HEADER {
            return Err(db.corrupt(id, base, "page image shorter than its header"));
        }
        let header_id = le_u64(&data, 0);
        let flags = le_u16(&data, 8);
        let count = usize::from(le_u16(&data, 10));
        let overflow = le_u32(&data, 12);
        if !inline && header_id != id {
            return Err(db.corrupt(id, base, format!("page header carries id {header_id}")));
        }
        let kind = match flags {
            BRANCH_FLAG => PageKind::Branch,
            LEAF_FLAG => PageKind::Leaf,
            f => {
                return Err(db.corrupt(
                    id,
                    base + 8,
                    format!("page flags {f:#x}: neither branch nor leaf"),
                ));
            }
        };
        if inline && (kind != PageKind::Leaf || overflow != 0) {
            return Err(db.corrupt(id, base, "inline bucket page is not a plain leaf"));
        }
        if PAGE_HEADER + count * ELEM_SIZE > data.len() {
            return Err(db.corrupt(
                id,
                base + 10,
                format!("{count} elements do not fit in a {}-byte page", data.len()),
            ));
        }
        Ok(Page {
            id,
            base,
            data,
            kind,
            count,
            overflow,
        })
    }

    fn elem_offset(&self, i: usize) -> usize {
        PAGE_HEADER + i * ELEM_SIZE
    }

    /// `len` bytes starting `rel` bytes after element `i`'s own address.
    fn span(&self, db: &BoltFile, i: usize, rel: u32, len: u64) -> Result<Bytes> {
        let eo = self.elem_offset(i);
        let start = eo as u64 + u64::from(rel);
        let end = start + len;
        if end > self.data.len() as u64 {
            return Err(db.corrupt(
                self.id,
                self.base + eo as u64,
                format!(
                    "element {i} data {start}..{end} extends past the {}-byte page",
                    self.data.len()
                ),
            ));
        }
        Ok(self.data.slice(start as usize..end as usize))
    }

    fn key_at(&self, db: &BoltFile, i: usize) -> Result<Bytes> {
        let eo = self.elem_offset(i);
        let (pos, ksize) = match self.kind {
            PageKind::Leaf => (le_u32(&self.data, eo + 4), le_u32(&self.data, eo + 8)),
            PageKind::Branch => (le_u32(&self.data, eo), le_u32(&self.data, eo + 4)),
        };
        self.span(db, i, pos, u64::from(ksize))
    }

    fn leaf(&self, db: &BoltFile, i: usize) -> Result<Entry> {
        let eo = self.elem_offset(i);
        let flags = le_u32(&self.data, eo);
        let pos = le_u32(&self.data, eo + 4);
        let ksize = u64::from(le_u32(&self.data, eo + 8));
        let vsize = u64::from(le_u32(&self.data, eo + 12));
        let kv = self.span(db, i, pos, ksize + vsize)?;
        let value_offset = self.base + eo as u64 + u64::from(pos) + ksize;
        Ok(Entry {
            key: kv.slice(..ksize as usize),
            value: kv.slice(ksize as usize..),
            is_bucket: flags & BUCKET_ELEM_FLAG != 0,
            page: self.id,
            value_offset,
        })
    }

    fn child(&self, i: usize) -> (u64, Origin) {
        let eo = self.elem_offset(i);
        (le_u64(&self.data, eo + 8), (self.id, self.base + eo as u64))
    }
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("id", &self.id)
            .field("base", &self.base)
            .field("kind", &self.kind)
            .field("count", &self.count)
            .field("len", &self.data.len())
            .finish()
    }
}

/// One key/value element of a bucket. `key` and `value` share the page buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Element key.
    pub key: Bytes,
    /// Element value (a bucket header when `is_bucket`).
    pub value: Bytes,
    /// The value is a nested bucket (leaf element flag 0x01).
    pub is_bucket: bool,
    /// Page holding the element (for inline buckets: the page holding the bucket).
    pub page: u64,
    /// Absolute file offset of the value, for hex inspection.
    pub value_offset: u64,
}

/// A bucket: either a B+tree rooted at a page, or an inline leaf stored in its header value.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bucket name (empty for the root bucket directory).
    pub name: Bytes,
    /// Root page id, 0 for an inline bucket.
    pub root: u64,
    /// Bucket sequence (unused by etcd).
    pub sequence: u64,
    inline: Option<Page>,
    origin: Origin,
}

impl Bucket {
    /// True if the bucket's data is stored inline in its parent's leaf.
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }
}

/// One page reachable from the root bucket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    /// Page id.
    pub id: u64,
    /// Branch or leaf.
    pub kind: PageKind,
    /// Number of elements.
    pub count: u16,
    /// Number of additional pages this page spans.
    pub overflow: u32,
    /// Owning bucket, `None` for the root bucket directory.
    pub bucket: Option<Bytes>,
}

/// Reachable pages and the unreachable (free or pending) ones below the high-water mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMap {
    /// Reachable branch/leaf pages, sorted by id.
    pub pages: Vec<PageInfo>,
    /// Page ids in `2..high_water` covered by no reachable page (or its overflow).
    pub unreachable: Vec<u64>,
    /// `meta.pgid`.
    pub high_water: u64,
}

/// Streaming, in-order iterator over a bucket's elements.
///
/// Holds at most one page per tree level; stops after the first error. Corruption checks:
/// depth limit, a page-visit budget of `meta.pgid` (so cycles and shared subtrees
/// terminate), and strictly ascending keys.
pub struct Iter<'a> {
    db: &'a BoltFile,
    stack: Vec<(Page, usize)>,
    start: Option<(u64, Origin)>,
    pages_left: u64,
    prev_key: Option<Vec<u8>>,
    done: bool,
}

impl Iter<'_> {
    fn visit(&mut self, pgid: u64, from: Origin) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.db.corrupt(
                from.0,
                from.1,
                format!("tree deeper than {MAX_DEPTH} levels"),
            ));
        }
        if self.pages_left == 0 {
            return Err(self.db.corrupt(
                from.0,
                from.1,
                format!("page {pgid}: more pages visited than exist (cycle or shared page)"),
            ));
        }
        self.pages_left -= 1;
        let page = self.db.read_page(pgid, from)?;
        self.stack.push((page, 0));
        Ok(())
    }

    fn advance(&mut self) -> Result<Option<Entry>> {
        if let Some((pgid, from)) = self.start.take() {
            self.visit(pgid, from)?;
        }
        loop {
            let Some((page, next)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *next >= page.count {
                self.stack.pop();
                continue;
            }
            let i = *next;
            *next += 1;
            if page.kind == PageKind::Branch {
                let (child, from) = page.child(i);
                self.visit(child, from)?;
                continue;
            }
            let entry = page.leaf(self.db, i)?;
            if let Some(prev) = &mut self.prev_key {
                if prev.as_slice() >= entry.key.as_ref() {
                    return Err(self.db.corrupt(
                        entry.page,
                        entry.value_offset,
                        format!(
                            "key {:?} does not sort after {:?}",
                            escape(&entry.key),
                            escape(prev)
                        ),
                    ));
                }
                prev.clear();
                prev.extend_from_slice(&entry.key);
            } else {
                self.prev_key = Some(entry.key.to_vec());
            }
            return Ok(Some(entry));
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.stack.clear();
                Some(Err(e))
            }
        }
    }
}

/// Small cache of branch pages for repeated point lookups (leaves are always re-read).
pub(crate) struct BranchCache {
    pages: HashMap<u64, Page>,
    bytes: usize,
    limit: usize,
}

impl BranchCache {
    /// A cache holding at most `limit` bytes of branch pages (0 disables it).
    pub(crate) fn new(limit: usize) -> Self {
        BranchCache {
            pages: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    fn page(&mut self, db: &BoltFile, pgid: u64, from: Origin) -> Result<Page> {
        if let Some(p) = self.pages.get(&pgid) {
            return Ok(p.clone());
        }
        let page = db.read_page(pgid, from)?;
        if page.kind == PageKind::Branch && page.data.len() <= self.limit {
            if self.bytes + page.data.len() > self.limit {
                self.pages.clear();
                self.bytes = 0;
            }
            self.bytes += page.data.len();
            self.pages.insert(pgid, page.clone());
        }
        Ok(page)
    }
}

impl BoltFile {
    /// Reads and validates page `pgid` including its overflow pages. `from` is where the
    /// reference came from, used for errors about the reference itself.
    fn read_page(&self, pgid: u64, from: Origin) -> Result<Page> {
        let ps = u64::from(self.page_size());
        let limit = self.meta().pgid;
        if pgid < 2 || pgid >= limit {
            return Err(self.corrupt(
                from.0,
                from.1,
                format!("reference to page {pgid} outside 2..{limit}"),
            ));
        }
        let offset = pgid * ps;
        let header = self.read_at(pgid, offset, PAGE_HEADER as u64)?;
        let overflow = u64::from(le_u32(&header, 12));
        if pgid + overflow >= limit {
            return Err(self.corrupt(
                pgid,
                offset + 12,
                format!("overflow {overflow} runs past the high-water mark {limit}"),
            ));
        }
        let data = self.read_at(pgid, offset, (overflow + 1) * ps)?;
        Page::parse(self, pgid, offset, data, false)
    }

    /// The root bucket, whose elements are the top-level buckets.
    pub fn root_bucket(&self) -> Bucket {
        let meta = self.meta();
        Bucket {
            name: Bytes::new(),
            root: meta.root,
            sequence: meta.sequence,
            inline: None,
            origin: (meta.index, meta.index * u64::from(meta.page_size) + 32),
        }
    }

    /// Opens the bucket whose header is `entry`'s value (an element with `is_bucket`).
    pub fn bucket_from_entry(&self, entry: &Entry) -> Result<Bucket> {
        let origin = (entry.page, entry.value_offset);
        if !entry.is_bucket {
            return Err(self.corrupt(origin.0, origin.1, "element is not a bucket"));
        }
        if entry.value.len() < BUCKET_HEADER {
            return Err(self.corrupt(
                origin.0,
                origin.1,
                format!("bucket header is {} bytes", entry.value.len()),
            ));
        }
        let root = le_u64(&entry.value, 0);
        let inline = if root == 0 {
            let image = entry.value.slice(BUCKET_HEADER..);
            let base = entry.value_offset + BUCKET_HEADER as u64;
            Some(Page::parse(self, entry.page, base, image, true)?)
        } else {
            None
        };
        Ok(Bucket {
            name: entry.key.clone(),
            root,
            sequence: le_u64(&entry.value, 8),
            inline,
            origin,
        })
    }

    /// All top-level buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<Bucket>> {
        let mut out = Vec::new();
        for entry in self.iter(&self.root_bucket()) {
            let entry = entry?;
            if entry.is_bucket {
                out.push(self.bucket_from_entry(&entry)?);
            }
        }
        Ok(out)
    }

    /// The top-level bucket called `name`, if it exists.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>> {
        match self.get(&self.root_bucket(), name)? {
            Some(entry) if entry.is_bucket => Ok(Some(self.bucket_from_entry(&entry)?)),
            _ => Ok(None),
        }
    }

    /// Streams `bucket`'s elements in key order without loading the bucket into memory.
    pub fn iter<'a>(&'a self, bucket: &Bucket) -> Iter<'a> {
        let (stack, start) = match &bucket.inline {
            Some(page) => (vec![(page.clone(), 0)], None),
            None => (Vec::new(), Some((bucket.root, bucket.origin))),
        };
        Iter {
            db: self,
            stack,
            start,
            pages_left: self.meta().pgid,
            prev_key: None,
            done: false,
        }
    }

    /// Looks up one key in `bucket` by descending the tree (O(depth) page reads).
    pub fn get(&self, bucket: &Bucket, key: &[u8]) -> Result<Option<Entry>> {
        self.seek(bucket, key, &mut BranchCache::new(0))
    }

    pub(crate) fn seek(
        &self,
        bucket: &Bucket,
        key: &[u8],
        cache: &mut BranchCache,
    ) -> Result<Option<Entry>> {
        let mut page = match &bucket.inline {
            Some(p) => p.clone(),
            None => cache.page(self, bucket.root, bucket.origin)?,
        };
        for _ in 0..MAX_DEPTH {
            // `lo` ends as the number of elements with key <= `key`.
            let (mut lo, mut hi) = (0, page.count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match page.key_at(self, mid)?.as_ref().cmp(key) {
                    Ordering::Less => lo = mid + 1,
                    Ordering::Equal if page.kind == PageKind::Leaf => {
                        return page.leaf(self, mid).map(Some);
                    }
                    Ordering::Equal => lo = mid + 1,
                    Ordering::Greater => hi = mid,
                }
            }
            if page.kind == PageKind::Leaf || page.count == 0 {
                return Ok(None);
            }
            // Descend into the last child whose first key <= `key` (or the first child).
            let (child, from) = page.child(lo.saturating_sub(1));
            page = cache.page(self, child, from)?;
        }
        Err(self.corrupt(
            page.id,
            page.base,
            format!("tree deeper than {MAX_DEPTH} levels"),
        ))
    }

    /// Lists every page reachable from the root bucket directory (including nested bucket
    /// trees) and the pages below the high-water mark that nothing references.
    pub fn page_map(&self) -> Result<PageMap> {
        let root = self.root_bucket();
        let mut todo: Vec<(u64, Option<Bytes>, Origin)> = vec![(root.root, None, root.origin)];
        let mut seen = HashSet::new();
        let mut pages = Vec::new();
        while let Some((pgid, owner, from)) = todo.pop() {
            if !seen.insert(pgid) {
                return Err(self.corrupt(
                    from.0,
                    from.1,
                    format!("page {pgid} is referenced twice"),
                ));
            }
            let page = self.read_page(pgid, from)?;
            match page.kind {
                PageKind::Branch => {
                    for i in (0..page.count).rev() {
                        let (child, from) = page.child(i);
                        todo.push((child, owner.clone(), from));
                    }
                }
                PageKind::Leaf => {
                    for i in 0..page.count {
                        let entry = page.leaf(self, i)?;
                        if entry.is_bucket {
                            let bucket = self.bucket_from_entry(&entry)?;
                            if !bucket.is_inline() {
                                todo.push((bucket.root, Some(bucket.name), bucket.origin));
                            }
                        }
                    }
                }
            }
            pages.push(PageInfo {
                id: pgid,
                kind: page.kind,
                count: page.count as u16,
                overflow: page.overflow,
                bucket: owner,
            });
        }
        pages.sort_by_key(|p| p.id);

        let mut unreachable = Vec::new();
        let mut next_free = 2;
        for p in &pages {
            if p.id < next_free {
                return Err(self.corrupt(
                    p.id,
                    p.id * u64::from(self.page_size()),
                    "page lies inside another page's overflow",
                ));
            }
            unreachable.extend(next_free..p.id);
            next_free = p.id + u64::from(p.overflow) + 1;
        }
        let high_water = self.meta().pgid;
        unreachable.extend(next_free..high_water);
        Ok(PageMap {
            pages,
            unreachable,
            high_water,
        })
    }
}
