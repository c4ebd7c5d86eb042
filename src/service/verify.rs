//! Key and Secret verification for the organization's services, behind a short-lived cache.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::credentials::{ApplicationId, parse_api_key, parse_client_secret};
use crate::domain::verification::{
    Assessment, Expectations, KeyStanding, SecretStanding, VerifyCode,
};
use crate::store::CredentialChange;
use chrono::{DateTime, TimeDelta, Utc};
use moka::sync::Cache;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// Records by lookup, each read from the database once however many requests
/// miss it at the same time. An entry goes into the cache empty, before its
/// read starts, and is filled in place: an invalidation that follows a change
/// reaches it whether or not its read has finished, so a read that may
/// predate the change is never kept (only the requests that raced the change
/// see it). No epoch is needed for that.
struct Slots<K, V>(Cache<K, Arc<OnceCell<V>>>);

impl<K, V> Slots<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// None when `ttl` is zero: the cache is off.
    fn new(ttl: Duration) -> Option<Self> {
        (!ttl.is_zero()).then(|| {
            Self(
                Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .time_to_live(ttl)
                    .build(),
            )
        })
    }

    /// The record for `key`, and whether it came without a read of our own
    /// (cached, or read by a concurrent request). A failed read is not
    /// cached: the next request tries again.
    async fn get_or_load<E, Fut>(&self, key: K, load: impl FnOnce() -> Fut) -> Result<(V, bool), E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.0.get_with(key, || Arc::new(OnceCell::new()));
        let mut read = false;
        let value = slot
            .get_or_try_init(|| {
                read = true;
                load()
            })
            .await?;
        Ok((value.clone(), !read))
    }

    fn invalidate_all(&self) {
        self.0.invalidate_all();
    }

    /// Drops, now, the records `stale` picks and every slot whose read is
    /// still out (what it will hold is not known yet). A sweep of the table
    /// rather than moka's lazy `invalidate_entries_if`: a slot inserted just
    /// before the change could escape that one's bookkeeping, and changes are
    /// rare enough for a walk of the table each. A slot inserted after the
    /// sweep began was inserted after the change committed, so its read is
    /// fresh.
    fn invalidate_if(&self, stale: impl Fn(&V) -> bool) {
        for (key, slot) in self.0.iter() {
            if slot.get().is_none_or(&stale) {
                self.0.invalidate(key.as_ref());
            }
        }
    }
}

/// Stored credentials by lookup, positive and negative entries alike. The
/// code is never cached: it is computed from the record and the clock on
/// every request, so an expiry is exact.
pub(super) struct VerifyCache {
    /// None when the cache is off (every request reads the database).
    keys: Option<Slots<String, KeyEntry>>,
    /// By the Secret's hash, like keys: an app may have two working Secrets
    /// (one in its rotation grace).
    secrets: Option<Slots<String, SecretEntry>>,
    /// Last-used stamps waiting to be written, by key id.
    pending_uses: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Whether this process currently hears other processes' changes.
    following: AtomicBool,
}

impl VerifyCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            keys: Slots::new(ttl),
            secrets: Slots::new(ttl),
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
            let app = app.clone();
            c.invalidate_if(move |entry| entry.as_ref().is_some_and(|k| k.standing.app.id == app));
        }
        if let Some(c) = &self.secrets {
            let app = app.clone();
            c.invalidate_if(move |entry| entry.as_ref().is_some_and(|s| s.app.id == app));
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
async fn lookup<K, V, Fut>(
    cache: Option<&Slots<K, V>>,
    key: K,
    load: impl FnOnce() -> Fut,
) -> ServiceResult<V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
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
                    }
                    Ok(CredentialChange::Resync) => {
                        tracing::info!("credential listener reconnected; cache flushed");
                        self.verify.invalidate();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "credential listener failed");
                        self.verify.following.store(false, Ordering::Release);
                        self.verify.invalidate();
                        // A listener that fails as soon as it connects must not spin.
                        if connected_at.elapsed() > LISTEN_RETRY_MAX {
                            retry = LISTEN_RETRY;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = stop.changed() => return,
                        }
                        retry = (retry * 2).min(LISTEN_RETRY_MAX);
                        break;
                    }
                }
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

    fn slots() -> Arc<Slots<&'static str, u32>> {
        Arc::new(Slots::new(Duration::from_secs(60)).expect("a cache"))
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
        cache.invalidate_if(|v| *v == 1);
        assert_eq!(get("a", 10).await, Ok((10, false)), "read again");
        assert_eq!(get("b", 20).await, Ok((2, true)), "kept");
    }

    /// A read that began before a change may return the old record. moka
    /// applies an invalidation to an entry when it next looks at it, on a
    /// read or in its upkeep; an entry still empty then must go, since what
    /// it will hold is not known yet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_racing_an_invalidation_is_not_kept() {
        let (cache, reads, gate) = (slots(), Arc::new(AtomicUsize::new(0)), gate());
        let racing = tokio::spawn({
            let (cache, load) = (cache.clone(), read(&reads, Some(gate.clone()), Ok(1)));
            async move { cache.get_or_load("k", load).await }
        });
        until("the racing read", || reads.load(Ordering::SeqCst) == 1).await;
        cache.invalidate_if(|v| *v == 1);
        // The upkeep meets the entry while its read is still out.
        cache.0.run_pending_tasks();
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
}
