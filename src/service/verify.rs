//! Key and Secret verification for the organization's services, behind a short-lived cache.

use super::{Service, ServiceResult};
use crate::domain::credentials::{ApplicationId, parse_api_key, parse_client_secret};
use crate::domain::verification::{
    Assessment, Expectations, KeyStanding, SecretStanding, VerifyCode,
};
use crate::store::CredentialChange;
use chrono::{DateTime, TimeDelta, Utc};
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

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

/// Stored credentials by lookup, positive and negative entries alike. The
/// code is never cached: it is computed from the record and the clock on
/// every request, so an expiry is exact.
pub(super) struct VerifyCache {
    /// None when the cache is off (every request reads the database).
    keys: Option<Cache<String, KeyEntry>>,
    secrets: Option<Cache<String, SecretEntry>>,
    /// Bumped by every invalidation: a load that began before one must not
    /// store what it read, which may predate the change.
    epoch: AtomicU64,
    /// Last-used stamps waiting to be written, by key id.
    pending_uses: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Whether this process currently hears other processes' changes.
    following: AtomicBool,
}

impl VerifyCache {
    pub(super) fn new(ttl: Duration) -> Self {
        fn build<K, V>(ttl: Duration) -> Option<Cache<K, V>>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .time_to_live(ttl)
                    .build()
            })
        }
        Self {
            keys: build(ttl),
            secrets: build(ttl),
            epoch: AtomicU64::new(0),
            pending_uses: Mutex::new(HashMap::new()),
            following: AtomicBool::new(false),
        }
    }

    /// Forgets everything: credentials changed somewhere. Changes are rare
    /// (revocations, rotations, new Secrets), so dropping every entry is
    /// cheaper to get right than tracking which entries an app owns.
    pub(super) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(c) = &self.keys {
            c.invalidate_all();
        }
        if let Some(c) = &self.secrets {
            c.invalidate_all();
        }
    }

    /// Caches what a load read, unless an invalidation came since the load
    /// began (`epoch`): its record may predate the change. An invalidation
    /// landing between the check and the insert is caught by the check after.
    fn store<K, V>(&self, cache: &Cache<K, V>, key: K, value: V, epoch: u64)
    where
        K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
        V: Clone + Send + Sync + 'static,
    {
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        cache.insert(key.clone(), value);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            cache.invalidate(&key);
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

fn cache_outcome(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("keygate_verify_cache_total", "result" => result).increment(1);
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
        let cache = &self.verify;
        let cached = cache.keys.as_ref().and_then(|c| c.get(hash.as_str()));
        cache_outcome(cached.is_some());
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let epoch = cache.epoch.load(Ordering::SeqCst);
                let entry = self
                    .store
                    .key_standing(&hash)
                    .await?
                    .map(|s| Arc::new(CachedKey::new(s)));
                if let Some(c) = &cache.keys {
                    cache.store(c, hash.as_str().to_owned(), entry.clone(), epoch);
                }
                entry
            }
        };
        let Some(entry) = entry else {
            return Ok(Verdict::invalid(VerifyCode::NotFound));
        };
        let now = self.clock.now();
        let assessment = entry.standing.assess(expect, now);
        // A key that exists was used, even when refused: a revoked key still
        // being presented is what its owner most needs to know.
        if assessment.code != VerifyCode::NotFound && assessment.code != VerifyCode::WrongApp {
            cache.note_use(&entry, now);
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
        let cache = &self.verify;
        let cached = cache.secrets.as_ref().and_then(|c| c.get(hash.as_str()));
        cache_outcome(cached.is_some());
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let epoch = cache.epoch.load(Ordering::SeqCst);
                let entry = self.store.secret_standing(&hash).await?.map(Arc::new);
                if let Some(c) = &cache.secrets {
                    cache.store(c, hash.as_str().to_owned(), entry.clone(), epoch);
                }
                entry
            }
        };
        // Another app's Secret is as unknown as a wrong one.
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
                        self.verify.invalidate();
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
