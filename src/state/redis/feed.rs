//! The feed that keeps a replica's denylist copy current: one task, one connection of its own at a time.
//!
//! A session begins by writing the changes kept while Redis could not take them, then reads the feed's
//! last id and after it the whole table (so nothing written in between is lost: it is read again from
//! the feed, and applying a change twice changes nothing), and then reads the feed with a blocking `XREAD`
//! from that id: a change made on any replica applies here as soon as Redis has it. Any error ends the
//! session; the next one (after 100 ms, at most 250 ms while Redis stays away) starts with the whole table
//! again, so a replica that was cut off catches up with everything it missed as soon as its link is back,
//! whatever the feed still holds. A failover ends the session too (the connection to the old master
//! breaks), and the new master's table is read in full. The whole table is also read every
//! `resync_seconds`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::AsyncCommands as _;
use tokio_util::sync::CancellationToken;

use super::topology::Conn;
use super::{answer, Store, BLOCK};
use crate::clock::Clock;
use crate::revocation::{Change, Denylist, Entry};
use crate::state::StateError;

/// The first wait before a new session after a failed one; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts while Redis is away: a returning link is used within this.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// The most changes one read takes from the feed.
const READ_COUNT: usize = 10_000;

pub(super) struct Feed {
    store: Arc<Store>,
    denylist: Arc<Denylist>,
    clock: Clock,
    period: Duration,
}

// === impl Feed ===

impl Feed {
    pub(super) fn new(
        store: Arc<Store>,
        denylist: Arc<Denylist>,
        clock: Clock,
        period: Duration,
    ) -> Feed {
        Feed {
            store,
            denylist,
            clock,
            period,
        }
    }

    /// Runs sessions until `cancel`.
    pub(super) async fn run(self, cancel: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut lost = false;
        loop {
            let mut established = false;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.session(lost, &mut established) => {}
            }
            lost = true;
            if established {
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: returns the error that ended it (already recorded as the fault).
    async fn session(&self, after_loss: bool, established: &mut bool) -> StateError {
        let store = &self.store;
        let connected = answer(&store.health, store.timeout, store.topology.feed()).await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let mut last = match self.resync(&mut conn).await {
            Ok(last) => last,
            Err(e) => return e,
        };
        *established = true;
        if after_loss {
            store.health.caught_up();
            tracing::info!("the denylist caught up with Redis after a lost connection");
        }
        let mut next_resync = Instant::now() + self.period;
        loop {
            store.health.recovered();
            store.health.heard();
            if let Err(e) = store.flush_pending(&mut conn).await {
                return e;
            }
            let now = Instant::now();
            if now >= next_resync {
                match self.resync(&mut conn).await {
                    Ok(id) => last = id,
                    Err(e) => return e,
                }
                next_resync = now + self.period;
                continue;
            }
            let block = BLOCK.min(next_resync - now).max(Duration::from_millis(1));
            match self.read(&mut conn, &last, block).await {
                Ok(Some(id)) => last = id,
                Ok(None) => {}
                Err(e) => return e,
            }
        }
    }

    /// Waits up to `block` for changes after `last` and applies them; returns the id of the last one.
    async fn read(
        &self,
        conn: &mut Conn,
        last: &str,
        block: Duration,
    ) -> Result<Option<String>, StateError> {
        let store = &self.store;
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&store.keys.feed)
            .arg(last);
        let call = xread.query_async::<Option<StreamReadReply>>(conn);
        // Not timed as an upstream call: it waits for changes by design.
        let reply = match tokio::time::timeout(block + store.timeout, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                store.health.failed("redis feed", &e);
                return Err(StateError::Unavailable(e.to_string()));
            }
            Err(_) => {
                store
                    .health
                    .failed("redis feed", &"no answer within state.timeout_ms");
                return Err(StateError::Unavailable("timed out".to_owned()));
            }
        };
        let Some(reply) = reply else {
            return Ok(None);
        };
        let mut newest = None;
        let mut changes = Vec::new();
        for key in reply.keys {
            for id in key.ids {
                match id
                    .get::<String>("c")
                    .map(|c| serde_json::from_str::<Change>(&c))
                {
                    Some(Ok(change)) => changes.push(change),
                    _ => tracing::warn!("ignoring a malformed revocation feed entry"),
                }
                newest = Some(id.id);
            }
        }
        self.denylist.apply_all(&changes, self.clock.now());
        Ok(newest)
    }

    /// Writes what is pending, then reads the feed's last id and the whole table; returns the id to read
    /// the feed from.
    async fn resync(&self, conn: &mut Conn) -> Result<String, StateError> {
        let store = &self.store;
        let (health, timeout, keys) = (&*store.health, store.timeout, &store.keys);
        store.flush_pending(conn).await?;
        store
            .topology
            .note_cluster_master(conn, &keys.hash)
            .await
            .map_err(|e| {
                health.failed("redis", &e);
                StateError::Unavailable(e.to_string())
            })?;
        let now = self.clock.now();
        let fresh: Option<String> = answer(
            health,
            timeout,
            redis::cmd("SET")
                .arg(&keys.epoch)
                .arg(now)
                .arg("NX")
                .query_async(conn),
        )
        .await?;
        if fresh.is_some() {
            self.write_back(conn, now).await?;
        }
        let newest: StreamRangeReply = answer(
            health,
            timeout,
            redis::cmd("XREVRANGE")
                .arg(&keys.feed)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn),
        )
        .await?;
        let last = newest
            .ids
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |id| id.id);
        let stored: Vec<(String, String)> =
            answer(health, timeout, conn.hgetall(&keys.hash)).await?;
        let mut expired = Vec::new();
        let mut entries = Vec::with_capacity(stored.len());
        for (field, json) in stored {
            match serde_json::from_str::<Entry>(&json) {
                Ok(entry) if entry.expires_at > now => entries.push(entry),
                Ok(_) => expired.push(field),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed stored revocation"),
            }
        }
        self.denylist.replace(entries, now);
        if !expired.is_empty() {
            let _: Result<(), _> =
                answer(health, timeout, conn.hdel::<_, _, ()>(&keys.hash, expired)).await;
        }
        Ok(last)
    }

    /// A new (or emptied) Redis: what this replica knows goes back in, table and feed, so a replica that
    /// reads the table before this lands gets it from the feed.
    async fn write_back(&self, conn: &mut Conn, now: i64) -> Result<(), StateError> {
        let local = self.denylist.list(now);
        if local.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            entries = local.len(),
            "Redis holds no denylist (new, restarted without persistence, or a failover lost it): writing back this replica's"
        );
        let keys = &self.store.keys;
        let mut pipe = redis::pipe();
        for entry in local {
            pipe.hset(
                &keys.hash,
                entry.key(),
                serde_json::to_string(&entry).expect("an entry serializes"),
            )
            .ignore();
            let change = Change::Put { entry };
            pipe.cmd("XADD")
                .arg(&keys.feed)
                .arg("MAXLEN")
                .arg("~")
                .arg(super::FEED_LENGTH)
                .arg("*")
                .arg("c")
                .arg(serde_json::to_string(&change).expect("a change serializes"))
                .ignore();
        }
        answer(
            &self.store.health,
            self.store.timeout,
            pipe.query_async::<()>(conn),
        )
        .await
    }
}
