//! A cache zone (`[cache.zones.NAME]`): the store every worker shares.
//!
//! Why `quick_cache`: it is sharded (a lookup locks one shard for reading,
//! never the whole zone), bounds the zone by weight (the bytes of each
//! entry), and its get-or-guard lets one request fetch a missing key while
//! the others wait, on any worker thread. Invariants: a zone never holds
//! more than `max_size` bytes of entries (quick_cache evicts) nor an
//! object over `max_object`; bodies are `Bytes`, so a hit is sent without
//! a copy; a key whose response `Vary`s holds a [`Slot::Vary`] marker that
//! names the varied headers, and each variant lives under its variant key
//! (see `key`); a key whose last response could not be stored holds a
//! short [`Slot::Pass`], so that waiting requests go to the backend at
//! once instead of one after another.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use super::key::variant_key;
use super::policy::Lifetime;
use crate::config::CacheZoneConfig;

/// How long a key that could not be stored sends requests straight to the
/// backend (Varnish's hit-for-miss), bounded so that a URL that becomes
/// cacheable is cached again soon.
pub const PASS_FOR: Duration = Duration::from_secs(5);

/// Bytes counted for an entry besides its head and body (key, bookkeeping).
const ENTRY_OVERHEAD: u64 = 256;

/// A stored response.
#[derive(Debug)]
pub struct Object {
    pub status: u16,
    /// The status line and the fields to send, each ending in CRLF,
    /// without framing, hop-by-hop fields or the final empty line.
    pub head: Bytes,
    pub body: Bytes,
    /// When it arrived, and how fresh it is.
    pub stored_at: SystemTime,
    pub life: Lifetime,
    pub etag: Option<Box<str>>,
    pub last_modified: Option<SystemTime>,
    /// The response's `Vary` (normalised names), when it has one: it is
    /// stored under the variant key of the request that fetched it.
    pub vary: Option<Box<str>>,
}

impl Object {
    /// Its current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.life.initial_age + now.duration_since(self.stored_at).unwrap_or_default()
    }
}

/// What a key holds.
#[derive(Debug, Clone)]
pub enum Slot {
    Object(Arc<Object>),
    /// The response varies on these (normalised, comma-joined) headers.
    Vary(Arc<str>),
    /// Not storable; go to the backend until then.
    Pass(Instant),
}

#[derive(Clone)]
struct SlotWeight;

impl Weighter<Vec<u8>, Slot> for SlotWeight {
    fn weight(&self, key: &Vec<u8>, slot: &Slot) -> u64 {
        let own = match slot {
            Slot::Object(o) => (o.head.len() + o.body.len()) as u64,
            Slot::Vary(v) => v.len() as u64,
            Slot::Pass(_) => 0,
        };
        key.len() as u64 + own + ENTRY_OVERHEAD
    }
}

/// Counts what quick_cache evicts for space.
#[derive(Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Vec<u8>, Slot> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: Vec<u8>, _: Slot) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A zone's counters, for `ringlb_cache_*{zone}`.
#[derive(Debug, Default)]
pub struct ZoneStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub invalidations: AtomicU64,
    pub coalesced: AtomicU64,
}

type Store = Cache<Vec<u8>, Slot, SlotWeight, DefaultHashBuilder, CountEvictions>;

/// The right to fetch a missing key: while it is held, other lookups of
/// the key wait (up to their bound). [`Zone::fill`] or [`Zone::pass`]
/// consume it; dropping it otherwise (the fetch failed) wakes the waiters,
/// and the first to look again leads.
pub struct Leader {
    zone: Arc<Zone>,
    key: Vec<u8>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let shard = self.zone.flight_shard(&self.key);
        let flight = shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if let Some(flight) = flight {
            flight.notify_waiters();
        }
    }
}

/// What a lookup found.
pub enum Found {
    Object(Arc<Object>),
    /// Nothing usable: fetch it, and store it through the leader.
    Lead(Leader),
    /// Nothing usable, and another request leads (or led and could not
    /// store it): fetch it without storing.
    Pass,
}

/// Shards of the in-flight table: a lookup that misses locks one shard
/// for a map insert or remove, never across an await.
const FLIGHT_SHARDS: usize = 16;

type Flights = Mutex<AHashMap<Vec<u8>, Arc<Notify>>>;

pub struct Zone {
    pub name: String,
    /// Changed in place by a reload that keeps the zone.
    max_size: AtomicU64,
    max_object: AtomicU64,
    store: Store,
    evictions: CountEvictions,
    flights: [Flights; FLIGHT_SHARDS],
    hasher: ahash::RandomState,
    pub stats: ZoneStats,
}

impl Zone {
    pub fn new(name: &str, max_size: u64, max_object: u64) -> Zone {
        let evictions = CountEvictions::default();
        // quick_cache sizes its shards from an item estimate; 16 KiB a
        // response is a middling guess and only affects its hash tables.
        let estimated_items = (max_size / 16_384).clamp(64, 1 << 20) as usize;
        let store = Cache::with(
            estimated_items,
            max_size,
            SlotWeight,
            DefaultHashBuilder::default(),
            evictions.clone(),
        );
        Zone {
            name: name.to_owned(),
            max_size: AtomicU64::new(max_size),
            max_object: AtomicU64::new(max_object),
            store,
            evictions,
            flights: std::array::from_fn(|_| Flights::default()),
            hasher: ahash::RandomState::new(),
            stats: ZoneStats::default(),
        }
    }

    /// Looks `primary` up for a request with these headers, without
    /// waiting: the stored object for its variant, if any.
    pub fn peek<'a, H>(&self, primary: &[u8], headers: H) -> Option<Arc<Object>>
    where
        H: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        match self.store.get(primary)? {
            Slot::Object(o) => Some(o),
            Slot::Vary(vary) => match self.store.get(&variant_key(primary, &vary, headers)?[..])? {
                Slot::Object(o) => Some(o),
                _ => None,
            },
            Slot::Pass(_) => None,
        }
    }

    /// Looks `primary` up, and when nothing is stored, leads its fetch or
    /// waits up to `wait` for the request that does (request coalescing;
    /// the leader may be on another worker).
    pub async fn lookup<'a, H>(
        self: &Arc<Self>,
        primary: &[u8],
        headers: H,
        wait: Duration,
    ) -> Found
    where
        H: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        // The key this request last waited for, if any.
        let mut waited_for: Option<Vec<u8>> = None;
        // At most the primary key's fetch, then the variant's.
        let mut waits = 0u8;
        loop {
            let waited = waited_for.is_some();
            // The key whose fetch a miss leads or waits for: the primary
            // key, or a `Vary` variant's key (each variant is coalesced on
            // its own).
            let missing: Vec<u8> = match self.store.get(primary) {
                Some(Slot::Object(o)) => return self.found(Found::Object(o), waited),
                Some(Slot::Vary(vary)) => match variant_key(primary, &vary, headers.clone()) {
                    Some(vk) => match self.store.get(&vk[..]) {
                        Some(Slot::Object(o)) => return self.found(Found::Object(o), waited),
                        _ => vk,
                    },
                    None => return Found::Pass,
                },
                Some(Slot::Pass(until)) if Instant::now() < until => return Found::Pass,
                Some(Slot::Pass(_)) | None => primary.to_vec(),
            };
            if waited_for.as_deref() == Some(&missing[..]) || waits >= 2 {
                // The leader gave up without storing (or a pass ran out):
                // fetch it ourselves, without leading, so that waiters do
                // not queue one after another. A wait for the primary key
                // that ended in a `Vary` marker is not that: this request's
                // variant is another fetch, led or joined once.
                return Found::Pass;
            }
            match self.lead_or_join(&missing) {
                Ok(leader) => return Found::Lead(leader),
                Err(notified) => {
                    waited_for = Some(missing);
                    waits += 1;
                    // The wait is in memory, not an io_uring op, so
                    // dropping it at the bound loses nothing.
                    #[allow(clippy::disallowed_methods)]
                    let woke = crate::io::timeout(wait, notified).await;
                    if woke.is_err() {
                        return Found::Pass;
                    }
                }
            }
        }
    }

    /// `found`, counted as coalesced when the request waited for it.
    fn found(&self, found: Found, waited: bool) -> Found {
        if waited && matches!(found, Found::Object(_)) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Waits up to `wait` for the fetch of `key` that another request
    /// leads, if any; `true` when none is (or no longer is) running.
    pub async fn wait_for_flight(&self, key: &[u8], wait: Duration) -> bool {
        let notified = {
            let flights = self
                .flight_shard(key)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match flights.get(key) {
                None => return true,
                Some(flight) => flight.clone().notified_owned(),
            }
        };
        // The wait is in memory, not an io_uring op, so dropping it at the
        // bound loses nothing.
        #[allow(clippy::disallowed_methods)]
        let woke = crate::io::timeout(wait, notified).await;
        woke.is_ok()
    }

    /// Leads the fetch of `key` unless another request already does.
    pub fn try_lead(self: &Arc<Self>, key: &[u8]) -> Option<Leader> {
        self.lead_or_join(key).ok()
    }

    /// Registers this request as the one fetching `key`, or, when another
    /// already does, returns the wait for it to end.
    fn lead_or_join(self: &Arc<Self>, key: &[u8]) -> Result<Leader, OwnedNotified> {
        let mut flights = self
            .flight_shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key) {
            let flight = flight.clone();
            // Created under the lock, so a leader that ends right after we
            // unlock still wakes it (tokio's `Notified` counts from
            // creation).
            return Err(flight.notified_owned());
        }
        flights.insert(key.to_vec(), Arc::new(Notify::new()));
        Ok(Leader {
            zone: self.clone(),
            key: key.to_vec(),
        })
    }

    fn flight_shard(&self, key: &[u8]) -> &Flights {
        let hash = self.hasher.hash_one(key);
        &self.flights[(hash as usize) % FLIGHT_SHARDS]
    }

    /// Stores `object` for `primary` (and, when it has a `Vary`, under
    /// the variant key of the request `headers`); `leader`, if this
    /// request led, is consumed. An object over `max_object` is not stored.
    pub fn fill<'a, H>(
        &self,
        leader: Option<Leader>,
        primary: &[u8],
        headers: H,
        object: Arc<Object>,
    ) -> bool
    where
        H: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        if (object.head.len() + object.body.len()) as u64 > self.max_object() {
            self.pass(leader, primary);
            return false;
        }
        match object.vary.clone().as_deref() {
            None => self.store.insert(primary.to_vec(), Slot::Object(object)),
            Some(vary) => {
                let Some(vk) = variant_key(primary, vary, headers) else {
                    self.pass(leader, primary);
                    return false;
                };
                self.store.insert(vk, Slot::Object(object));
                self.store.insert(primary.to_vec(), Slot::Vary(vary.into()));
            }
        }
        // The leader ends after the store, so its waiters find the object.
        drop(leader);
        true
    }

    /// Marks `primary` as not storable for [`PASS_FOR`], releasing the
    /// requests that wait for it. A `Vary` variant's leader only releases
    /// its waiters: the key's marker and its other variants stay.
    pub fn pass(&self, leader: Option<Leader>, primary: &[u8]) {
        let variant = leader.as_ref().is_some_and(|l| l.key != primary);
        if !variant {
            self.store
                .insert(primary.to_vec(), Slot::Pass(Instant::now() + PASS_FOR));
        }
        // Waiters wake now and find the pass.
        drop(leader);
    }

    /// Removes what `purge` names; returns how many entries.
    pub fn purge(&self, purge: &Purge) -> u64 {
        match purge {
            Purge::All => self.purge_all(),
            Purge::Url(url) => self.purge_where(|key| {
                let url_part = url_of(key);
                url_part.starts_with(url.as_bytes())
                    && matches!(url_part.get(url.len()), None | Some(b'\n' | b'\0'))
            }),
            Purge::UrlPrefix(prefix) => {
                self.purge_where(|key| url_of(key).starts_with(prefix.as_bytes()))
            }
            Purge::PathPrefix(prefix) => self.purge_where(|key| {
                let url = url_of(key);
                let after_scheme = url
                    .windows(3)
                    .position(|w| w == b"://")
                    .map_or(url, |i| &url[i + 3..]);
                let path = after_scheme
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(&[][..], |i| &after_scheme[i..]);
                path.starts_with(prefix.as_bytes())
            }),
        }
    }

    fn purge_where(&self, matches: impl Fn(&[u8]) -> bool) -> u64 {
        let removed = Cell::new(0);
        self.store.retain(|key, _| {
            let hit = matches(key);
            removed.set(removed.get() + u64::from(hit));
            !hit
        });
        let removed = removed.get();
        self.stats
            .invalidations
            .fetch_add(removed, Ordering::Relaxed);
        removed
    }

    /// Removes the entries whose key starts with `prefix` (a whole key
    /// removes its variants too); returns how many.
    pub fn purge_prefix(&self, prefix: &[u8]) -> u64 {
        self.purge_where(|key| key.starts_with(prefix))
    }

    /// Empties the zone; returns how many entries it held.
    pub fn purge_all(&self) -> u64 {
        let n = self.store.len() as u64;
        self.store.clear();
        self.stats.invalidations.fetch_add(n, Ordering::Relaxed);
        n
    }

    pub fn max_object(&self) -> u64 {
        self.max_object.load(Ordering::Relaxed)
    }

    pub fn max_size(&self) -> u64 {
        self.max_size.load(Ordering::Relaxed)
    }

    /// A reload's new sizes for a zone it keeps (entries stay; a smaller
    /// `max_size` evicts down to it).
    fn resize(&self, max_size: u64, max_object: u64) {
        if self.max_size.swap(max_size, Ordering::Relaxed) != max_size {
            self.store.set_capacity(max_size);
        }
        self.max_object.store(max_object, Ordering::Relaxed);
    }

    /// Bytes held (the weights of its entries).
    pub fn size_bytes(&self) -> u64 {
        self.store.weight()
    }

    pub fn entries(&self) -> usize {
        self.store.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;

/// What `POST /cache/{zone}/purge` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// `key=URL`: the entry of that URL (`scheme://host/path?query`),
    /// with its variants and key extras.
    Url(String),
    /// `prefix=`: every entry whose URL starts with it; a prefix that
    /// starts with `/` matches the path on any host.
    UrlPrefix(String),
    PathPrefix(String),
    /// `all`.
    All,
}

/// The URL part of a key (after `METHOD `).
fn url_of(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b' ')
        .map_or(key, |i| &key[i + 1..])
}

/// The zones of a config, by index as routes refer to them; shared by
/// every worker and kept across reloads by name.
#[derive(Default)]
pub struct Zones {
    list: Vec<Arc<Zone>>,
}

impl Zones {
    /// The zones `configured`, reusing those of `before` with the same name
    /// (their entries stay; their sizes follow the new config).
    pub fn plan(configured: &[CacheZoneConfig], before: Option<&Zones>) -> Zones {
        let list = configured
            .iter()
            .map(|c| match before.and_then(|b| b.by_name(&c.name)) {
                Some(zone) => {
                    zone.resize(c.max_size, c.max_object);
                    zone.clone()
                }
                None => Arc::new(Zone::new(&c.name, c.max_size, c.max_object)),
            })
            .collect();
        Zones { list }
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Zone>> {
        self.list.get(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Zone>> {
        self.list.iter().find(|z| z.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.list.iter()
    }
}
