//! The chain's tables, built once per runtime so that what a Check costs does not grow with the number
//! of providers: the entries the chain visits, the places and who reads each, the providers by name, who
//! reads `Authorization` with which scheme, and the deny messages joined.
//!
//! The token's `iss` picks its `jwt` provider through [`super::jwt::JwtProviders`]' issuer map; these
//! tables make the rest of the chain's questions lookups too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Entry, Kind};
use crate::config::CredentialLocation;

/// How an entry reads the `Authorization` header (at its place or, with DPoP rules, the `DPoP` scheme).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct AuthorizationReads {
    /// It reads the header whatever the scheme (a raw `Authorization` place).
    any: bool,
    /// The schemes it reads (as configured; compared case-insensitively).
    schemes: Vec<Box<str>>,
}

// === impl AuthorizationReads ===

impl AuthorizationReads {
    fn add(&mut self, location: &CredentialLocation) {
        if let CredentialLocation::Header { name, scheme } = location {
            if name == "authorization" {
                match scheme {
                    None => self.any = true,
                    Some(scheme) => {
                        if !self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
                            self.schemes.push(scheme.as_str().into());
                        }
                    }
                }
            }
        }
    }

    fn union(&mut self, other: &AuthorizationReads) {
        self.any |= other.any;
        for scheme in &other.schemes {
            if !self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
                self.schemes.push(scheme.clone());
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.any && self.schemes.is_empty()
    }

    /// Whether a credential sent with `scheme` is read.
    pub(super) fn reads(&self, scheme: &str) -> bool {
        self.any || self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }
}

/// The providers reading one place (one distinct `credential`).
#[derive(Debug, Default)]
pub(super) struct Place {
    /// Opaque-token providers that also take JWTs (`accept_jwt`, `kubernetes`), in order.
    pub(super) jwt_takers: Box<[usize]>,
    /// Opaque-token providers with `shared_location_order: true`, in order.
    pub(super) shared_order: Box<[usize]>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// The entries the chain visits when every provider may answer and no explanation is asked for:
    /// all of them but a `jwt` provider after the first one with the same place and DPoP place. The
    /// first one already asked the `jwt` providers of its place (the token's `iss` picks among them):
    /// the later ones would find the same credential and only skip it or repeat a "not mine".
    pub(super) visit: Box<[usize]>,
    /// Every entry, in order (the walk when explaining, which lists every provider's answer).
    pub(super) all: Box<[usize]>,
    /// For each entry, its place (an index into `places`).
    pub(super) place_of: Box<[u32]>,
    pub(super) places: Box<[Place]>,
    /// Entry index by provider name (names are unique).
    pub(super) by_name: HashMap<Arc<str>, usize>,
    /// For each entry, how it reads `Authorization` (`None`: not at all, or it takes no credential).
    pub(super) authorization: Box<[Option<AuthorizationReads>]>,
    /// The same over every entry.
    pub(super) authorization_all: AuthorizationReads,
    /// Every provider's deny message, joined (the answer to a request without credential on a route
    /// that takes every provider).
    pub(super) deny_messages_all: Option<Arc<str>>,
}

// === impl Tables ===

impl Tables {
    pub(super) fn new(entries: &[Entry]) -> Tables {
        let mut place_ids: HashMap<&CredentialLocation, u32> = HashMap::new();
        let mut place_of = Vec::with_capacity(entries.len());
        let mut jwt_takers: Vec<Vec<usize>> = Vec::new();
        let mut shared_order: Vec<Vec<usize>> = Vec::new();
        let mut visit = Vec::with_capacity(entries.len());
        // The (place, DPoP place) of every `jwt` provider visited so far.
        let mut jwt_places: HashSet<(u32, Option<&CredentialLocation>)> = HashSet::new();
        let mut authorization = Vec::with_capacity(entries.len());
        let mut authorization_all = AuthorizationReads::default();
        for (i, entry) in entries.iter().enumerate() {
            let next = place_ids.len() as u32;
            let place = *place_ids.entry(&entry.location).or_insert(next);
            if place == next {
                jwt_takers.push(Vec::new());
                shared_order.push(Vec::new());
            }
            place_of.push(place);
            let dpop_place = entry.dpop.as_ref().and_then(|(_, p)| p.as_ref());
            match &entry.kind {
                Kind::Opaque(opaque) => {
                    if opaque.takes_jwts() {
                        jwt_takers[place as usize].push(i);
                    }
                    if entry.shared_location_order {
                        shared_order[place as usize].push(i);
                    }
                    visit.push(i);
                }
                Kind::Jwt => {
                    if jwt_places.insert((place, dpop_place)) {
                        visit.push(i);
                    }
                }
                _ => visit.push(i),
            }
            let reads = match entry.kind {
                Kind::Anonymous(_) | Kind::Mtls(_) => None,
                _ => {
                    let mut reads = AuthorizationReads::default();
                    reads.add(&entry.location);
                    if let Some(dpop_place) = dpop_place {
                        reads.add(dpop_place);
                    }
                    (!reads.is_empty()).then_some(reads)
                }
            };
            if let Some(reads) = &reads {
                authorization_all.union(reads);
            }
            authorization.push(reads);
        }
        let places = jwt_takers
            .into_iter()
            .zip(shared_order)
            .map(|(jwt_takers, shared_order)| Place {
                jwt_takers: jwt_takers.into(),
                shared_order: shared_order.into(),
            })
            .collect();
        let messages: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.deny_message.as_deref())
            .collect();
        Tables {
            visit: visit.into(),
            all: (0..entries.len()).collect(),
            place_of: place_of.into(),
            places,
            by_name: entries
                .iter()
                .enumerate()
                .map(|(i, e)| (Arc::clone(&e.name), i))
                .collect(),
            authorization: authorization.into(),
            authorization_all,
            deny_messages_all: (!messages.is_empty()).then(|| Arc::from(messages.join("; "))),
        }
    }

    /// The place of entry `i`.
    pub(super) fn place(&self, i: usize) -> &Place {
        &self.places[self.place_of[i] as usize]
    }

    /// Whether entries `a` and `b` read the same place.
    pub(super) fn same_place(&self, a: usize, b: usize) -> bool {
        self.place_of[a] == self.place_of[b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, scheme: Option<&str>) -> CredentialLocation {
        CredentialLocation::Header {
            name: name.into(),
            scheme: scheme.map(Into::into),
        }
    }

    #[test]
    fn authorization_reads_compare_schemes_without_case_and_raw_reads_take_any() {
        let mut reads = AuthorizationReads::default();
        reads.add(&header("authorization", Some("Bearer")));
        reads.add(&header("authorization", Some("bearer")));
        reads.add(&header("x-token", None));
        reads.add(&CredentialLocation::Cookie("authorization".into()));
        assert_eq!(reads.schemes.len(), 1);
        assert!(reads.reads("BEARER"));
        assert!(!reads.reads("Basic"));
        let mut raw = AuthorizationReads::default();
        raw.add(&header("authorization", None));
        assert!(raw.reads("Basic"));
        let mut all = AuthorizationReads::default();
        all.union(&reads);
        all.union(&raw);
        assert!(all.reads("Anything") && all.reads("bearer"));
        assert!(AuthorizationReads::default().is_empty());
    }
}
