//! Revocation: the denylist of subjects (`sub`), token ids (`jti`), sessions (`sid`) and clients
//! (`client_id` / `azp`) that makes an authenticated, still-valid credential fail with `revoked`.
//!
//! The [`Denylist`] is the local copy every check reads: an immutable table behind an `ArcSwap`, replaced
//! whole on each change (changes are rare, checks are many), so a check takes no lock and makes no network
//! call. What feeds it (the admin API, the Auth0 log stream, the Redis feed and resync) lives in
//! `crate::state`. [`auth0`] maps Auth0 log events to entries.

pub mod auth0;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::Identity;

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every token of this subject issued at or before the entry (`iat` ≤ `revoked_at`): the user can sign
    /// in again afterwards.
    Sub,
    /// One token (`jti`, RFC 7519 §4.1.7).
    Jti,
    /// Every token of one session (`sid`, OpenID Connect Front/Back-Channel Logout).
    Sid,
    /// Every token of one OAuth2 client (`client_id`, else `azp`).
    ClientId,
}

// === impl Kind ===

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Sub, Kind::Jti, Kind::Sid, Kind::ClientId];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sub => "sub",
            Kind::Jti => "jti",
            Kind::Sid => "sid",
            Kind::ClientId => "client_id",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One denylist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    pub value: String,
    /// Only tokens of this issuer (`iss`); every issuer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Unix seconds when the entry was made; a `sub` entry revokes tokens with `iat` at or before it.
    pub revoked_at: i64,
    /// Unix seconds after which the entry no longer applies (and is dropped).
    pub expires_at: i64,
}

// === impl Entry ===

impl Entry {
    /// The entry's identity: a later entry with the same kind, value and issuer replaces it.
    pub fn key(&self) -> String {
        key(self.kind, &self.value, self.issuer.as_deref())
    }

    /// Whether the entry revokes `token` of `issuer` at `now`. `leeway`: how far ahead of ours an IdP's
    /// clock may run (the providers' largest `leeway_seconds`).
    fn applies(&self, issuer: &str, iat: Option<i64>, now: i64, leeway: i64) -> bool {
        if self.expires_at <= now {
            return false;
        }
        if self.issuer.as_deref().is_some_and(|i| i != issuer) {
            return false;
        }
        match self.kind {
            // A token without `iat` cannot show it was issued after the entry: it stays revoked. One whose
            // `iat` is within the leeway after the entry may come from an IdP whose clock runs ahead,
            // minted before the entry: it is revoked too (a new sign-in passes once past the leeway).
            Kind::Sub => iat.is_none_or(|iat| iat <= self.revoked_at.saturating_add(leeway)),
            Kind::Jti | Kind::Sid | Kind::ClientId => true,
        }
    }
}

/// The stable key of an entry (also its field name in Redis): kind, issuer and value joined with NUL,
/// which none of them may contain.
pub fn key(kind: Kind, value: &str, issuer: Option<&str>) -> String {
    let issuer = issuer.unwrap_or("");
    let mut key = String::with_capacity(kind.as_str().len() + issuer.len() + value.len() + 2);
    key.push_str(kind.as_str());
    key.push('\0');
    key.push_str(issuer);
    key.push('\0');
    key.push_str(value);
    key
}

/// A change to the denylist, as published to other replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Put {
        entry: Entry,
    },
    /// Every entry of this kind and value, whatever its issuer.
    Remove {
        kind: Kind,
        value: String,
    },
}

/// The entries of one kind, by value.
type ByValue = HashMap<String, Vec<Entry>>;

/// The local copy of the denylist every check reads.
#[derive(Default)]
pub struct Denylist {
    table: ArcSwap<[ByValue; 4]>,
    /// Serializes writers (each copies the table, changes it and swaps it in).
    write: Mutex<()>,
    copies: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist")
            .field("entries", &self.len())
            .finish()
    }
}

// === impl Denylist ===

impl Denylist {
    /// Whether `identity` is revoked at `now`; `leeway` is how far ahead of ours an IdP's clock may run
    /// (a `sub` entry also revokes tokens whose `iat` is that much after it). No lock; an empty list costs
    /// one load, and a claim allocates only when it is a number (`jti: 12345` matches the entry `12345`).
    pub fn revoked(&self, identity: &Identity, now: i64, leeway: i64) -> bool {
        let table = self.table.load();
        if table.iter().all(HashMap::is_empty) {
            return false;
        }
        let claim = |name: &str| -> Option<std::borrow::Cow<'_, str>> {
            match identity.claims.get(name)? {
                Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    Some(std::borrow::Cow::Owned(n.to_string()))
                }
                _ => None,
            }
        };
        let iat = identity.claims.get("iat").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        });
        let issuer = &*identity.issuer;
        let hit = |kind: Kind, value: Option<&str>| {
            value
                .and_then(|v| table[kind.index()].get(v))
                .is_some_and(|entries| entries.iter().any(|e| e.applies(issuer, iat, now, leeway)))
        };
        let sub = claim("sub");
        hit(Kind::Sub, sub.as_deref().or(identity.subject.as_deref()))
            || hit(Kind::Jti, claim("jti").as_deref())
            || hit(Kind::Sid, claim("sid").as_deref())
            || hit(Kind::ClientId, identity.client_id.as_deref())
            || hit(Kind::ClientId, claim("client_id").as_deref())
            || hit(Kind::ClientId, claim("azp").as_deref())
    }

    /// Applies one change; expired entries are dropped on the way.
    pub fn apply(&self, change: &Change, now: i64) {
        self.apply_all(std::slice::from_ref(change), now);
    }

    /// Applies changes in order, as one new table: a batch (an Auth0 log stream delivery, the changes
    /// waiting on the Redis feed) costs one copy of the table, not one per change.
    pub fn apply_all(&self, changes: &[Change], now: i64) {
        if changes.is_empty() {
            return;
        }
        self.update(now, |table| {
            for change in changes {
                match change {
                    Change::Put { entry } => {
                        let entries = table[entry.kind.index()]
                            .entry(entry.value.clone())
                            .or_default();
                        entries.retain(|e| e.issuer != entry.issuer);
                        entries.push(entry.clone());
                    }
                    Change::Remove { kind, value } => {
                        table[kind.index()].remove(value);
                    }
                }
            }
        });
    }

    /// How many times the table was copied for a change (each is a new table every check then reads).
    pub fn copies(&self) -> u64 {
        self.copies.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces every entry (a full resync).
    pub fn replace(&self, entries: impl IntoIterator<Item = Entry>, now: i64) {
        self.update(now, |table| {
            *table = Default::default();
            for entry in entries {
                let by_value = table[entry.kind.index()]
                    .entry(entry.value.clone())
                    .or_default();
                by_value.retain(|e| e.issuer != entry.issuer);
                by_value.push(entry);
            }
        });
    }

    /// Every entry still in force at `now`, sorted by kind, value and issuer.
    pub fn list(&self, now: i64) -> Vec<Entry> {
        let table = self.table.load();
        let mut all: Vec<Entry> = table
            .iter()
            .flat_map(|by_value| by_value.values().flatten())
            .filter(|e| e.expires_at > now)
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            (a.kind.index(), &a.value, &a.issuer).cmp(&(b.kind.index(), &b.value, &b.issuer))
        });
        all
    }

    /// The entries of this kind and value, whatever their issuer.
    pub fn find(&self, kind: Kind, value: &str) -> Vec<Entry> {
        self.table.load()[kind.index()]
            .get(value)
            .cloned()
            .unwrap_or_default()
    }

    /// How many entries the table holds (expired ones included until the next change).
    pub fn len(&self) -> usize {
        self.table
            .load()
            .iter()
            .map(|by_value| by_value.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update(&self, now: i64, change: impl FnOnce(&mut [ByValue; 4])) {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut table: [ByValue; 4] = (**self.table.load()).clone();
        self.copies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        change(&mut table);
        for by_value in &mut table {
            by_value.retain(|_, entries| {
                entries.retain(|e| e.expires_at > now);
                !entries.is_empty()
            });
        }
        self.table.store(Arc::new(table));
    }
}

/// Why a requested entry is refused (admin API, CLI).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEntry {
    #[error("`value` must be 1 to {MAX_VALUE_BYTES} bytes without control characters")]
    Value,
    #[error("`issuer` must be 1 to {MAX_VALUE_BYTES} bytes without control characters")]
    Issuer,
    #[error("`ttl_seconds` must be between 1 and {MAX_TTL_SECONDS}")]
    Ttl,
}

/// The longest value or issuer an entry takes.
pub const MAX_VALUE_BYTES: usize = 1024;
pub use crate::config::MAX_TTL_SECONDS;

/// Builds an entry made at `now`, checking what a client sent.
pub fn new_entry(
    kind: Kind,
    value: String,
    issuer: Option<String>,
    ttl_seconds: u64,
    now: i64,
) -> Result<Entry, InvalidEntry> {
    let fine =
        |s: &str| !s.is_empty() && s.len() <= MAX_VALUE_BYTES && !s.chars().any(|c| c.is_control());
    if !fine(&value) {
        return Err(InvalidEntry::Value);
    }
    if issuer.as_deref().is_some_and(|i| !fine(i)) {
        return Err(InvalidEntry::Issuer);
    }
    if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
        return Err(InvalidEntry::Ttl);
    }
    Ok(Entry {
        kind,
        value,
        issuer,
        revoked_at: now,
        expires_at: now + ttl_seconds as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityBuilder;
    use serde_json::json;

    fn identity(claims: Value) -> Identity {
        IdentityBuilder::default().claims_identity(
            &Arc::from("idp"),
            Arc::from("https://idp.example/"),
            claims.as_object().unwrap().clone(),
            i64::MAX,
        )
    }

    fn put(list: &Denylist, kind: Kind, value: &str, issuer: Option<&str>, at: i64) {
        let entry = new_entry(kind, value.into(), issuer.map(Into::into), 100, at).unwrap();
        list.apply(&Change::Put { entry }, at);
    }

    #[test]
    fn a_sub_entry_revokes_tokens_issued_before_it_only() {
        let list = Denylist::default();
        put(&list, Kind::Sub, "alice", None, 1000);
        assert!(list.revoked(&identity(json!({"sub": "alice", "iat": 999})), 1001, 0));
        assert!(list.revoked(&identity(json!({"sub": "alice", "iat": 1000})), 1001, 0));
        assert!(!list.revoked(&identity(json!({"sub": "alice", "iat": 1001})), 1001, 0));
        // No `iat`: cannot show it is newer, so it stays revoked.
        assert!(list.revoked(&identity(json!({"sub": "alice"})), 1001, 0));
        assert!(!list.revoked(&identity(json!({"sub": "bob", "iat": 1})), 1001, 0));
        // The entry expires.
        assert!(!list.revoked(&identity(json!({"sub": "alice", "iat": 999})), 1100, 0));
    }

    #[test]
    fn a_sub_entry_revokes_tokens_whose_iat_is_ahead_within_the_leeway() {
        let list = Denylist::default();
        put(&list, Kind::Sub, "alice", None, 1000);
        // Minted before the entry by an IdP whose clock runs 20 s ahead.
        let ahead = identity(json!({"sub": "alice", "iat": 1020}));
        assert!(list.revoked(&ahead, 1001, 30));
        assert!(list.revoked(&identity(json!({"sub": "alice", "iat": 1030})), 1001, 30));
        // Past the leeway: a sign-in after the entry.
        assert!(!list.revoked(&identity(json!({"sub": "alice", "iat": 1031})), 1040, 30));
    }

    #[test]
    fn numeric_claims_match_entries_by_their_decimal_text() {
        let list = Denylist::default();
        put(&list, Kind::Jti, "12345", None, 10);
        put(&list, Kind::Sub, "42", None, 10);
        put(&list, Kind::Sid, "7", None, 10);
        assert!(list.revoked(&identity(json!({"sub": "u", "jti": 12345})), 11, 0));
        assert!(list.revoked(&identity(json!({"sub": "u", "jti": "12345"})), 11, 0));
        assert!(!list.revoked(&identity(json!({"sub": "u", "jti": 12346})), 11, 0));
        assert!(!list.revoked(&identity(json!({"sub": "u", "jti": 12345.5})), 11, 0));
        assert!(list.revoked(&identity(json!({"sub": 42, "iat": 1})), 11, 0));
        assert!(list.revoked(&identity(json!({"sub": "u", "sid": 7})), 11, 0));
    }

    #[test]
    fn a_batch_of_changes_is_one_copy_of_the_table() {
        let list = Denylist::default();
        let changes: Vec<Change> = (0..8_000)
            .map(|i| Change::Put {
                entry: new_entry(Kind::Sub, format!("user-{i}"), None, 100, 10).unwrap(),
            })
            .collect();
        list.apply_all(&changes, 10);
        assert_eq!(list.copies(), 1);
        assert_eq!(list.len(), 8_000);
        assert!(list.revoked(&identity(json!({"sub": "user-7999"})), 11, 0));
        // In order: a removal later in the batch wins over a put before it.
        list.apply_all(
            &[
                Change::Put {
                    entry: new_entry(Kind::Jti, "j".into(), None, 100, 10).unwrap(),
                },
                Change::Remove {
                    kind: Kind::Sub,
                    value: "user-1".into(),
                },
            ],
            10,
        );
        assert_eq!(list.copies(), 2);
        assert!(!list.revoked(&identity(json!({"sub": "user-1"})), 11, 0));
        assert!(list.revoked(&identity(json!({"sub": "u", "jti": "j"})), 11, 0));
    }

    #[test]
    fn jti_sid_and_client_entries_match_their_claims() {
        let list = Denylist::default();
        put(&list, Kind::Jti, "t-1", None, 10);
        put(&list, Kind::Sid, "s-1", None, 10);
        put(&list, Kind::ClientId, "spa", None, 10);
        put(&list, Kind::ClientId, "svc", None, 10);
        let now = 11;
        assert!(list.revoked(&identity(json!({"sub": "u", "jti": "t-1"})), now, 0));
        assert!(!list.revoked(&identity(json!({"sub": "u", "jti": "t-2"})), now, 0));
        assert!(list.revoked(&identity(json!({"sub": "u", "sid": "s-1"})), now, 0));
        assert!(list.revoked(&identity(json!({"sub": "u", "azp": "spa"})), now, 0));
        assert!(list.revoked(&identity(json!({"client_id": "svc"})), now, 0));
        // An Auth0 machine token names its client only in `sub` (`<client id>@clients`).
        let auth0 = IdentityBuilder::default().claims_identity(
            &Arc::from("auth0"),
            Arc::from("https://tenant.eu.auth0.com/"),
            json!({"sub": "svc@clients"}).as_object().unwrap().clone(),
            i64::MAX,
        );
        assert!(list.revoked(&auth0, now, 0));
        assert!(!list.revoked(&identity(json!({"sub": "u", "azp": "web"})), now, 0));
    }

    #[test]
    fn an_issuer_scoped_entry_spares_other_issuers() {
        let list = Denylist::default();
        put(
            &list,
            Kind::Sub,
            "alice",
            Some("https://other.example/"),
            10,
        );
        assert!(!list.revoked(&identity(json!({"sub": "alice", "iat": 1})), 11, 0));
        put(&list, Kind::Sub, "alice", Some("https://idp.example/"), 10);
        assert!(list.revoked(&identity(json!({"sub": "alice", "iat": 1})), 11, 0));
        assert_eq!(list.find(Kind::Sub, "alice").len(), 2);
        list.apply(
            &Change::Remove {
                kind: Kind::Sub,
                value: "alice".into(),
            },
            11,
        );
        assert!(list.is_empty());
    }

    #[test]
    fn replace_and_list_drop_expired_entries() {
        let list = Denylist::default();
        let keep = new_entry(Kind::Jti, "a".into(), None, 100, 0).unwrap();
        let gone = new_entry(Kind::Jti, "b".into(), None, 5, 0).unwrap();
        list.replace([keep.clone(), gone], 10);
        assert_eq!(list.list(10), vec![keep]);
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn entries_are_checked() {
        assert_eq!(
            new_entry(Kind::Sub, "".into(), None, 1, 0),
            Err(InvalidEntry::Value)
        );
        assert_eq!(
            new_entry(Kind::Sub, "a\nb".into(), None, 1, 0),
            Err(InvalidEntry::Value)
        );
        assert_eq!(
            new_entry(Kind::Sub, "a".into(), Some("".into()), 1, 0),
            Err(InvalidEntry::Issuer)
        );
        assert_eq!(
            new_entry(Kind::Sub, "a".into(), None, 0, 0),
            Err(InvalidEntry::Ttl)
        );
        let change = Change::Put {
            entry: new_entry(Kind::ClientId, "c".into(), None, 1, 0).unwrap(),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains("\"kind\":\"client_id\""), "{json}");
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }
}
