//! Key and Secret verification for the organization's services, behind a short-lived cache.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::credentials::{ApplicationId, parse_api_key, parse_client_secret};
use crate::domain::verification::{
    Assessment, Expectations, KeyStanding, SecretStanding, VerifyCode,
};
use crate::store::CredentialChange;
use chrono::{DateTime, TimeDelta, Utc};
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};

/// A key's `last_used_at` is written at most this often.
pub const LAST_USED_GRANULARITY: TimeDelta = TimeDelta::minutes(1);
/// Entries each cache holds at most; a verified key costs well under 1 KiB.
const CACHE_CAPACITY: u64 = 100_000;
/// Keys awaiting their last-used stamp at most; past that a stamp waits for
/// the next minute rather than growing memory under a flood of distinct keys.
const PENDING_USES_MAX: usize = 100_000;
/// Last-used stamps written per transaction.
const LAST_USED_CHUNK: usize = 500;
/// A lost credential listener is re-opened after this, doubling up to `LISTEN_RETRY_MAX`.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);

/// The answer for one presented credential: its code and, only when valid,
/// what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<T> {
    pub code: VerifyCode,
    pub missing_scopes: Vec<String>,
    /// Some only for `VALID`: an invalid credential's answer says nothing
    /// about any application.
    pub credential: Option<Arc<T>>,
}

impl<T> Verdict<T> {
    fn invalid(code: VerifyCode) -> Self {
        Self {
            code,
            missing_scopes: Vec::new(),
            credential: None,
        }
    }

    fn from_assessment(a: Assessment, standing: Arc<T>) -> Self {
        Self {
            credential: a.is_valid().then_some(standing),
            code: a.code,
            missing_scopes: a.missing_scopes,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.code == VerifyCode::Valid
    }
}

/// A cached key and when this process last queued its last-used stamp.
struct CachedKey {
    standing: Arc<KeyStanding>,
    noted_ms: AtomicI64,
}

impl CachedKey {
    fn new(standing: KeyStanding) -> Self {
        let noted_ms = standing
            .last_used_at
            .map_or(i64::MIN, |t| t.timestamp_millis());
        Self {
            standing: Arc::new(standing),
            noted_ms: AtomicI64::new(noted_ms),
        }
    }
}

type KeyEntry = Option<Arc<CachedKey>>;
type SecretEntry = Option<Arc<SecretStanding>>;

/// One lookup's record, read once for every request that misses it meanwhile.
struct Slot<V> {
    /// Tells this slot from a later one for the same lookup, so that the
    /// index forgets only what was evicted.
    id: u64,
    /// The cache's generation when the slot was made; its read starts later.
    born: u64,
    cell: OnceCell<Filled<V>>,
}

struct Filled<V> {
    value: V,
    /// False when an invalidation came while the read was out: the record
    /// may predate the change, so only the requests that waited on that read
    /// get it.
    kept: bool,
}

/// Lookups by the owner of their record, for dropping one owner's entries
/// without walking the cache.
type Index<K, O> = Arc<Mutex<HashMap<O, HashMap<K, u64>>>>;

fn unindex<K: Hash + Eq, O: Hash + Eq>(index: &Index<K, O>, owner: &O, key: &K, id: u64) {
    let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(keys) = index.get_mut(owner) {
        if keys.get(key) == Some(&id) {
            keys.remove(key);
        }
        if keys.is_empty() {
            index.remove(owner);
        }
    }
}

/// Records by lookup, each read from the database once however many requests
/// miss it at the same time.
///
/// Dropping one owner's records never walks moka's table: its iterator can
/// spin without end while the table is rehashed (moka 0.12.16), and did so
/// under the credential listener. A side index names each owner's filled
/// lookups instead, and a generation, bumped by every invalidation, catches
/// the reads still out then: a slot made before the latest invalidation is
/// neither joined while its read is out nor kept once filled, since that read
/// may predate the change (only the requests that raced the change see it).
struct Slots<K, V, O> {
    cache: Cache<K, Arc<Slot<V>>>,
    index: Index<K, O>,
    generation: AtomicU64,
    next_id: AtomicU64,
    owner: fn(&V) -> Option<O>,
}

impl<K, V, O> Slots<K, V, O>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
    O: Hash + Eq + Send + Sync + 'static,
{
    /// None when `ttl` is zero: the cache is off. `owner` names whom a
    /// record belongs to; records of nobody are dropped only all at once.
    fn new(ttl: Duration, owner: fn(&V) -> Option<O>) -> Option<Self> {
        if ttl.is_zero() {
            return None;
        }
        let index: Index<K, O> = Arc::default();
        let evicted = index.clone();
        let cache = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .time_to_live(ttl)
            // Runs on the thread that removes the entry: never called while
            // the index is locked here.
            .eviction_listener(move |key: Arc<K>, slot: Arc<Slot<V>>, _| {
                if let Some(o) = slot.cell.get().and_then(|f| owner(&f.value)) {
                    unindex(&evicted, &o, &key, slot.id);
                }
            })
            .build();
        Some(Self {
            cache,
            index,
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            owner,
        })
    }

    /// The record for `key`, and whether it came without a read of our own
    /// (cached, or read by a concurrent request). A failed read is not
    /// cached: the next request tries again.
    async fn get_or_load<E, Fut>(&self, key: K, load: impl FnOnce() -> Fut) -> Result<(V, bool), E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let mut load = Some(load);
        loop {
            let slot = self.cache.get_with(key.clone(), || {
                Arc::new(Slot {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    born: self.generation.load(Ordering::SeqCst),
                    cell: OnceCell::new(),
                })
            });
            let usable = match slot.cell.get() {
                Some(filled) => filled.kept,
                None => slot.born == self.generation.load(Ordering::SeqCst),
            };
            if !usable {
                self.discard(&key, &slot);
                continue;
            }
            let mut read = false;
            let filled = slot
                .cell
                .get_or_try_init(|| {
                    read = true;
                    let load = load
                        .take()
                        .expect("a slot is read at most once per request");
                    self.fill(&key, &slot, load)
                })
                .await?;
            if read {
                self.settle(&key, &slot, &filled.value, filled.kept);
            }
            return Ok((filled.value.clone(), !read));
        }
    }

    async fn fill<E, Fut>(
        &self,
        key: &K,
        slot: &Slot<V>,
        load: impl FnOnce() -> Fut,
    ) -> Result<Filled<V>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let value = load().await?;
        // Indexed before the generation is read: an invalidation either
        // finds the key in the index or has moved the generation by then.
        // A read outrun by a newer slot for the same key (it was discarded
        // while out) must not take the key's entry from that slot: ids grow,
        // so the newest slot's stays, and the old one's settling leaves it.
        if let Some(o) = (self.owner)(&value) {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            index
                .entry(o)
                .or_default()
                .entry(key.clone())
                .and_modify(|id| *id = (*id).max(slot.id))
                .or_insert(slot.id);
        }
        let kept = slot.born == self.generation.load(Ordering::SeqCst);
        Ok(Filled { value, kept })
    }

    /// After its own read: a slot not kept leaves the cache, and a slot the
    /// cache no longer holds (removed before it was filled, so its eviction
    /// named nobody) leaves the index.
    fn settle(&self, key: &K, slot: &Arc<Slot<V>>, value: &V, kept: bool) {
        let held = kept
            && self
                .cache
                .get(key)
                .is_some_and(|held| Arc::ptr_eq(&held, slot));
        if held {
            return;
        }
        if let Some(o) = (self.owner)(value) {
            unindex(&self.index, &o, key, slot.id);
        }
        if !kept {
            self.discard(key, slot);
        }
    }

    /// Removes `slot`, and not a later one for the same key.
    fn discard(&self, key: &K, slot: &Arc<Slot<V>>) {
        self.cache
            .entry(key.clone())
            .and_compute_with(|entry| match entry {
                Some(e) if Arc::ptr_eq(e.value(), slot) => Op::Remove,
                _ => Op::Nop,
            });
    }

    fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.cache.invalidate_all();
    }

    /// Drops, now, `owner`'s records, and makes every read still out not
    /// kept (what it will hold is not known yet).
    fn invalidate_owner(&self, owner: &O) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let keys = self
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(owner);
        // The lock is released first: removal calls the eviction listener.
        for key in keys.into_iter().flat_map(HashMap::into_keys) {
            self.cache.invalidate(&key);
        }
    }
}

fn key_owner(entry: &KeyEntry) -> Option<ApplicationId> {
    entry.as_ref().map(|k| k.standing.app.id.clone())
}

fn secret_owner(entry: &SecretEntry) -> Option<ApplicationId> {
    entry.as_ref().map(|s| s.app.id.clone())
}

/// Stored credentials by lookup, positive and negative entries alike. The
/// code is never cached: it is computed from the record and the clock on
/// every request, so an expiry is exact.
pub(super) struct VerifyCache {
    /// None when the cache is off (every request reads the database).
    keys: Option<Slots<String, KeyEntry, ApplicationId>>,
    /// By the Secret's hash, like keys: an app may have two working Secrets
    /// (one in its rotation grace).
    secrets: Option<Slots<String, SecretEntry, ApplicationId>>,
    /// Last-used stamps waiting to be written, by key id.
    pending_uses: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Whether this process currently hears other processes' changes.
    following: AtomicBool,
}

impl VerifyCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            keys: Slots::new(ttl, key_owner),
            secrets: Slots::new(ttl, secret_owner),
            pending_uses: Mutex::new(HashMap::new()),
            following: AtomicBool::new(false),
        }
    }

    /// Forgets everything: changes may have been missed (a listener that
    /// reconnected cannot tell which).
    pub(super) fn invalidate(&self) {
        if let Some(c) = &self.keys {
            c.invalidate_all();
        }
        if let Some(c) = &self.secrets {
            c.invalidate_all();
        }
    }

    /// Forgets what is cached of `app`: its keys were revoked, rotated or
    /// its Secret issued, and every other app's entries stay warm.
    ///
    /// Unknown keys and Secrets stay cached: an entry for a hash nobody had
    /// issued turns wrong only if that very credential is issued later, and
    /// a new one is random, so nobody presented it before it existed.
    pub(super) fn invalidate_app(&self, app: &ApplicationId) {
        if let Some(c) = &self.keys {
            c.invalidate_owner(app);
        }
        if let Some(c) = &self.secrets {
            c.invalidate_owner(app);
        }
    }

    fn note_use(&self, key: &CachedKey, now: DateTime<Utc>) {
        let now_ms = now.timestamp_millis();
        let noted = key.noted_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(noted) < LAST_USED_GRANULARITY.num_milliseconds() {
            return;
        }
        // One request per key and minute wins the stamp; the rest move on.
        if key
            .noted_ms
            .compare_exchange(noted, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut pending = self
            .pending_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.len() < PENDING_USES_MAX || pending.contains_key(&key.standing.key_id) {
            pending.insert(key.standing.key_id.clone(), now);
        }
    }

    fn take_uses(&self) -> Vec<(String, DateTime<Utc>)> {
        let mut pending = self
            .pending_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.drain().collect()
    }

    /// Puts back stamps a failed write could not store, unless newer ones came.
    fn restore_uses(&self, uses: &[(String, DateTime<Utc>)]) {
        let mut pending = self
            .pending_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, at) in uses {
            if pending.len() >= PENDING_USES_MAX {
                break;
            }
            pending.entry(id.clone()).or_insert(*at);
        }
    }
}

/// A miss is a database read: requests that wait for another's read of the
/// same record count as hits.
fn cache_outcome(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("keygate_verify_cache_total", "result" => result).increment(1);
}

/// The record for `key`, through the cache when it is on.
async fn lookup<K, V, O, Fut>(
    cache: Option<&Slots<K, V, O>>,
    key: K,
    load: impl FnOnce() -> Fut,
) -> ServiceResult<V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
    O: Hash + Eq + Send + Sync + 'static,
    Fut: Future<Output = ServiceResult<V>>,
{
    let (value, hit) = match cache {
        Some(c) => c.get_or_load(key, load).await?,
        None => (load().await?, false),
    };
    cache_outcome(hit);
    Ok(value)
}

impl Service {
    /// Checks a presented API key against what the caller expects of it.
    /// Malformed keys (prefix, length, checksum) never reach the cache or the
    /// database, and are never hashed.
    pub async fn verify_key(
        &self,
        presented: &str,
        expect: &Expectations,
    ) -> ServiceResult<Verdict<KeyStanding>> {
        let Ok(key) = parse_api_key(presented) else {
            return Ok(Verdict::invalid(VerifyCode::Malformed));
        };
        let hash = key.hash();
        let load = || async {
            let standing = self.store.key_standing(&hash).await?;
            Ok::<_, ServiceError>(standing.map(|s| Arc::new(CachedKey::new(s))))
        };
        let entry = lookup(self.verify.keys.as_ref(), hash.as_str().to_owned(), load).await?;
        let Some(entry) = entry else {
            return Ok(Verdict::invalid(VerifyCode::NotFound));
        };
        let now = self.clock.now();
        let assessment = entry.standing.assess(expect, now);
        // A key that exists was used, even when refused: a revoked key still
        // being presented is what its owner most needs to know.
        if assessment.code != VerifyCode::NotFound && assessment.code != VerifyCode::WrongApp {
            self.verify.note_use(&entry, now);
        }
        Ok(Verdict::from_assessment(assessment, entry.standing.clone()))
    }

    /// Checks an application's ID and Secret. A wrong Secret is `NOT_FOUND`,
    /// like an unknown application: the answer tells a prober nothing.
    pub async fn authenticate_app(
        &self,
        app_id: &str,
        secret: &str,
        expect: &Expectations,
    ) -> ServiceResult<Verdict<SecretStanding>> {
        let (Ok(app_id), Ok(secret)) = (ApplicationId::parse(app_id), parse_client_secret(secret))
        else {
            return Ok(Verdict::invalid(VerifyCode::Malformed));
        };
        let hash = secret.hash();
        let load = || async {
            Ok::<_, ServiceError>(self.store.secret_standing(&hash).await?.map(Arc::new))
        };
        let entry = lookup(self.verify.secrets.as_ref(), hash.as_str().to_owned(), load).await?;
        // Found by its hash (compared in constant time by the store); another
        // app's Secret is as unknown as a wrong one.
        let Some(standing) = entry.filter(|s| s.app.id == app_id) else {
            return Ok(Verdict::invalid(VerifyCode::NotFound));
        };
        let assessment = standing.assess(expect, self.clock.now());
        Ok(Verdict::from_assessment(assessment, standing))
    }

    /// Writes the last-used stamps gathered since the previous call, in one
    /// transaction. Returns how many keys were stamped.
    pub async fn flush_last_used(&self) -> ServiceResult<u64> {
        let uses = self.verify.take_uses();
        let mut written = 0;
        // Short transactions: on SQLite each holds the one write lock the
        // bot's own writes wait for.
        for (i, chunk) in uses.chunks(LAST_USED_CHUNK).enumerate() {
            match self.mark_used(chunk).await {
                Ok(n) => written += n,
                Err(e) => {
                    self.verify.restore_uses(&uses[i * LAST_USED_CHUNK..]);
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    async fn mark_used(&self, uses: &[(String, DateTime<Utc>)]) -> ServiceResult<u64> {
        let mut tx = self.store.begin().await?;
        let written = tx.mark_keys_used(uses, LAST_USED_GRANULARITY).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// True while `follow_credential_changes` is connected and listening.
    pub fn is_following_credential_changes(&self) -> bool {
        self.verify.following.load(Ordering::Acquire)
    }

    /// Drops cached credentials whenever any process changes some, until
    /// `stop`. Only PostgreSQL carries notifications; on SQLite this returns
    /// at once and the cache's lifetime bounds staleness across processes.
    pub async fn follow_credential_changes(&self, mut stop: watch::Receiver<bool>) {
        let mut retry = LISTEN_RETRY;
        loop {
            let connected = tokio::select! {
                connected = self.store.credential_changes() => connected,
                _ = stop.changed() => return,
            };
            let mut changes = match connected {
                Ok(Some(changes)) => changes,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "cannot listen for credential changes");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => return,
                    }
                    retry = (retry * 2).min(LISTEN_RETRY_MAX);
                    continue;
                }
            };
            let connected_at = tokio::time::Instant::now();
            // What changed while nobody listened is unknown.
            self.verify.invalidate();
            self.verify.following.store(true, Ordering::Release);
            tracing::debug!("listening for credential changes");
            loop {
                let change = tokio::select! {
                    change = changes.next() => change,
                    _ = stop.changed() => {
                        self.verify.following.store(false, Ordering::Release);
                        return;
                    }
                };
                match change {
                    Ok(CredentialChange::App(app)) => {
                        tracing::debug!(%app, "credentials changed elsewhere");
                        self.verify.invalidate_app(&app);
                        continue;
                    }
                    Ok(CredentialChange::Resync) => {
                        tracing::info!(
                            "the credential listener's connection dropped; reopening it"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "credential listener failed"),
                }
                self.verify.following.store(false, Ordering::Release);
                self.verify.invalidate();
                if connected_at.elapsed() > LISTEN_RETRY_MAX {
                    // It had been up a while: a new one at once.
                    retry = LISTEN_RETRY;
                } else {
                    // A listener that fails as soon as it connects must not spin.
                    tracing::debug!(retry_in = ?retry, "reopening the credential listener later");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => return,
                    }
                    retry = (retry * 2).min(LISTEN_RETRY_MAX);
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Each record is owned by its own value.
    fn slots<K>() -> Arc<Slots<K, u32, u32>>
    where
        K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    {
        Arc::new(Slots::new(Duration::from_secs(60), |v| Some(*v)).expect("a cache"))
    }

    fn gate() -> Arc<Notify> {
        Arc::new(Notify::new())
    }

    /// A read of `value` that counts itself and, when given one, waits for `gate`.
    fn read(
        reads: &Arc<AtomicUsize>,
        gate: Option<Arc<Notify>>,
        value: Result<u32, ()>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, ()>> + Send>> + Send + use<>
    {
        let reads = reads.clone();
        move || {
            Box::pin(async move {
                reads.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                value
            })
        }
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{what} never happened");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_read() {
        let (cache, reads, gate) = (slots(), Arc::new(AtomicUsize::new(0)), gate());
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (cache, load) = (cache.clone(), read(&reads, Some(gate.clone()), Ok(7)));
            burst.spawn(async move { cache.get_or_load("k", load).await });
        }
        until("the first read", || reads.load(Ordering::SeqCst) == 1).await;
        // Let the others pile up behind it before it answers.
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        let answers = burst.join_all().await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one database read");
        assert!(answers.iter().all(|a| a.as_ref().map(|(v, _)| *v) == Ok(7)));
        let misses = answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|(_, hit)| !hit));
        assert_eq!(misses.count(), 1, "only the reader counts a miss");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_outrun_by_a_newer_one_leaves_it_indexed() {
        let (cache, reads, gate) = (slots::<&str>(), Arc::new(AtomicUsize::new(0)), gate());
        // Read A of "k" is out when another owner's invalidation comes.
        let slow = {
            let (cache, load) = (cache.clone(), read(&reads, Some(gate.clone()), Ok(7)));
            tokio::spawn(async move { cache.get_or_load("k", load).await })
        };
        until("read A", || reads.load(Ordering::SeqCst) == 1).await;
        cache.invalidate_owner(&99);
        // Read B of "k" cannot join A, so it reads, and is cached and indexed.
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(7))).await,
            Ok((7, false))
        );
        // A finishes after B: it is not kept, and must not unindex B.
        gate.notify_one();
        assert_eq!(slow.await.unwrap(), Ok((7, false)));
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(7))).await,
            Ok((7, true)),
            "B is cached"
        );
        cache.invalidate_owner(&7);
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(7))).await,
            Ok((7, false)),
            "invalidating its owner reaches B"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_not_cached() {
        let (cache, reads) = (slots(), Arc::new(AtomicUsize::new(0)));
        let get = |value| cache.get_or_load("k", read(&reads, None, value));
        assert_eq!(get(Err(())).await, Err(()));
        assert_eq!(get(Ok(1)).await, Ok((1, false)));
        assert_eq!(get(Ok(2)).await, Ok((1, true)));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalidating_some_keeps_the_rest() {
        let (cache, reads) = (slots(), Arc::new(AtomicUsize::new(0)));
        let get = |key, value| cache.get_or_load(key, read(&reads, None, Ok(value)));
        assert_eq!(get("a", 1).await, Ok((1, false)));
        assert_eq!(get("b", 2).await, Ok((2, false)));
        cache.invalidate_owner(&1);
        assert_eq!(get("a", 10).await, Ok((10, false)), "read again");
        assert_eq!(get("b", 20).await, Ok((2, true)), "kept");
    }

    /// A read of 1 for "k", out until `gate` opens.
    async fn read_held_open(
        cache: &Arc<Slots<&'static str, u32, u32>>,
        reads: &Arc<AtomicUsize>,
        gate: &Arc<Notify>,
    ) -> tokio::task::JoinHandle<Result<(u32, bool), ()>> {
        let racing = tokio::spawn({
            let (cache, load) = (cache.clone(), read(reads, Some(gate.clone()), Ok(1)));
            async move { cache.get_or_load("k", load).await }
        });
        until("the racing read", || reads.load(Ordering::SeqCst) == 1).await;
        racing
    }

    /// A read that began before a change may return the old record: the
    /// requests that raced the change get it, and it is not kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_racing_an_invalidation_is_not_kept() {
        let (cache, reads, gate) = (slots(), Arc::new(AtomicUsize::new(0)), gate());
        let racing = read_held_open(&cache, &reads, &gate).await;
        // Whose record it is, nobody knows yet: any owner's change counts.
        cache.invalidate_owner(&99);
        gate.notify_one();
        assert_eq!(
            racing.await.unwrap(),
            Ok((1, false)),
            "its own request sees it"
        );
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(2))).await,
            Ok((2, false)),
            "the next one reads again"
        );
    }

    /// A request that comes after an invalidation returned does not wait on
    /// a read that was out before it: that read may predate the change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_out_before_an_invalidation_is_not_joined_after_it() {
        let (cache, reads, gate) = (slots(), Arc::new(AtomicUsize::new(0)), gate());
        let racing = read_held_open(&cache, &reads, &gate).await;
        cache.invalidate_owner(&1);
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(2))).await,
            Ok((2, false)),
            "a read of its own"
        );
        gate.notify_one();
        assert_eq!(racing.await.unwrap(), Ok((1, false)));
        assert_eq!(
            cache.get_or_load("k", read(&reads, None, Ok(3))).await,
            Ok((2, true)),
            "the fresh record is the one kept"
        );
    }

    /// Enough entries to rehash moka's table many times over, filled while
    /// owners are invalidated: invalidation must finish (walking the table
    /// could spin for good in moka 0.12.16) and must still reach every record
    /// it owns, however the fills and invalidations interleaved.
    #[test]
    fn invalidation_under_churn_finishes_and_misses_nothing() {
        const KEYS: u32 = 20_000;
        const OWNERS: u32 = 16;
        let cache = slots::<u32>();
        let (done, finished) = std::sync::mpsc::channel();
        let work = cache.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for t in 0..2 {
                    let cache = work.clone();
                    tasks.spawn(async move {
                        for k in (t..KEYS).step_by(2) {
                            let owner = k % OWNERS;
                            let got = cache
                                .get_or_load(k, || async move { Ok::<_, ()>(owner) })
                                .await;
                            assert_eq!(got.map(|(v, _)| v), Ok(owner));
                            if k % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    });
                }
                let cache = work.clone();
                tasks.spawn(async move {
                    for round in 0..2_000 {
                        cache.invalidate_owner(&(round % OWNERS));
                        tokio::task::yield_now().await;
                    }
                });
                tasks.join_all().await;
                for owner in 0..OWNERS {
                    work.invalidate_owner(&owner);
                }
                for k in 0..KEYS {
                    let reads = Arc::new(AtomicUsize::new(0));
                    let got = work
                        .get_or_load(k, read(&reads, None, Ok(k % OWNERS)))
                        .await;
                    assert_eq!(got, Ok((k % OWNERS, false)), "key {k} was kept");
                }
            });
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the churn finished in time");
        // What is cached is indexed, and no more.
        cache.cache.run_pending_tasks();
        let indexed: usize = cache.index.lock().unwrap().values().map(|k| k.len()).sum();
        assert_eq!(indexed as u64, cache.cache.entry_count());
    }
}
