//! The chain: every credential a request presents, judged by the first provider that owns it (the
//! rules are in the [`super`] module's documentation). Its one entry point is
//! [`Providers::authenticate`].

use std::sync::Arc;

use super::{Attempt, ChainOutcome, Entry, Kind, Outcome, Providers};
use crate::config::CredentialLocation;
use crate::credential::{self, Found};
use crate::decision::{Denial, DenyCause, DenyReason, DpopChallenge, Unavailable};
use crate::dpop::Scheme;
use crate::identity::Identity;
use crate::request::RequestView;

/// A `jwt` provider's refusal that only says the token is not its issuer's.
fn declined_as_not_its_issuer(reason: DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::UntrustedIssuer | DenyReason::MissingIssuer
    )
}

/// A credential of a place that no provider has taken yet: rejected, or `soft`ly not understood (not of a
/// provider's kind, or a JWT not of its issuers), which a real rejection of the place outranks.
struct Pending<'a> {
    place: &'a CredentialLocation,
    index: usize,
    reason: DenyReason,
    soft: bool,
}

impl<'a> Pending<'a> {
    /// Records a "not mine" for `place` unless the place already has something pending.
    fn soft(
        pending: &mut Vec<Pending<'a>>,
        place: &'a CredentialLocation,
        index: usize,
        reason: DenyReason,
    ) {
        if !pending.iter().any(|p| p.place == place) {
            pending.push(Pending {
                place,
                index,
                reason,
                soft: true,
            });
        }
    }
}

// === impl Providers ===

impl Providers {
    /// Runs the chain over the providers in `allowed` (indices in declared order, ascending, as
    /// [`crate::policy::Route::provider_indices`] gives them; all when `None`).
    /// `attempts`, when given, receives what each provider answered.
    ///
    /// Every credential the request presents at a place some provider reads is judged, by the first
    /// provider that owns it ([`Entry::owns`]): a JWS-shaped token by the `jwt` providers of its place, an
    /// opaque one by the first opaque-token provider of its place (the next one of the same place only when
    /// the config says `shared_location_order: true` and the earlier one rejected it). A credential that
    /// is rejected, or that no provider of its place understands, denies the request even when another
    /// credential authenticates (a forged token is never passed on beside a valid API key); one that cannot
    /// be judged (an upstream is down) makes the answer an error, never an allow.
    pub async fn authenticate(
        &self,
        request: &RequestView<'_>,
        allowed: Option<&[usize]>,
        mut attempts: Option<&mut Vec<Attempt>>,
    ) -> ChainOutcome {
        let mut winner: Option<Arc<Identity>> = None;
        // Rejected or not understood, per place, until a later owner of that place (if allowed) takes it.
        let mut pending: Vec<Pending<'_>> = Vec::new();
        // Places whose JWT the `jwt` providers declined as not their issuer's while a provider taking JWTs
        // reads the place too (`accept_jwt`, `kubernetes`): that provider judges it.
        let mut declined: Vec<&CredentialLocation> = Vec::new();
        let mut unavailable: Option<Unavailable> = None;
        let mut anonymous: Option<usize> = None;
        // Places whose credential has had its owner's answer.
        let mut owned: Vec<&CredentialLocation> = Vec::new();
        // The first token checked by a provider with DPoP rules: which provider, and how it came.
        let mut dpop_rejection: Option<(usize, Scheme)> = None;
        // The route's providers (in declared order, as the policy lists them), not a walk over all of
        // them; every provider when the route takes all: without an explanation to write, a `jwt`
        // provider after the first of its place is left out (see `Tables::visit`).
        let visit: &[usize] = match (allowed, &attempts) {
            (Some(allowed), _) => allowed,
            (None, None) => &self.tables.visit,
            (None, Some(_)) => &self.tables.all,
        };
        for &i in visit {
            let Some(entry) = self.entries.get(i) else {
                continue;
            };
            let place = &entry.location;
            let outcome = match &entry.kind {
                Kind::Anonymous(_) => {
                    anonymous.get_or_insert(i);
                    continue;
                }
                Kind::Jwt | Kind::Opaque(_)
                    if owned.contains(&place)
                        || (matches!(entry.kind, Kind::Jwt) && declined.contains(&place)) =>
                {
                    // The credential of this place already had its owner's answer.
                    record(&mut attempts, entry, "skipped");
                    continue;
                }
                Kind::Jwt | Kind::Opaque(_) => match extract(request, entry) {
                    (Found::None, _) => Outcome::NoCredential,
                    (Found::Malformed(reason), _) => Outcome::Rejected(reason),
                    (Found::One(token), _) if !self.owns(i, &token, allowed) => {
                        // Present, but not of this provider's kind: a denial unless a later provider of
                        // the same place owns it.
                        let reason = match entry.kind {
                            Kind::Jwt => DenyReason::NotAJwt,
                            _ => DenyReason::UnsupportedCredential,
                        };
                        Pending::soft(&mut pending, place, i, reason);
                        record(&mut attempts, entry, "not_mine");
                        continue;
                    }
                    (Found::One(token), scheme) => match &entry.kind {
                        Kind::Jwt => {
                            // Every jwt provider of this place is served here: the token's `iss` picks.
                            let accept = |k: usize| {
                                let e = self.jwt_entries[k];
                                allowed.is_none_or(|a| a.binary_search(&e).is_ok())
                                    && self.tables.same_place(e, i)
                            };
                            let outcome = self.jwt.authenticate(&token, accept).await;
                            // The rules of the provider that took the token (its `iss` chose it).
                            let by = match &outcome {
                                Outcome::Authenticated(id) => {
                                    self.tables.by_name.get(&id.provider).copied().unwrap_or(i)
                                }
                                _ => i,
                            };
                            let outcome =
                                self.dpop_check(by, outcome, request, &token, scheme).await;
                            dpop_rejection = dpop_rejection.or(Some((by, scheme)));
                            outcome
                        }
                        Kind::Opaque(provider) => {
                            // Boxed: an upstream call's future is large, and unboxed it would size the
                            // future of every Check, which is moved several times per request.
                            let outcome = Box::pin(provider.authenticate(&token, request)).await;
                            let outcome =
                                self.dpop_check(i, outcome, request, &token, scheme).await;
                            dpop_rejection = dpop_rejection.or(Some((i, scheme)));
                            outcome
                        }
                        _ => unreachable!("matched above"),
                    },
                },
                Kind::Mtls(p) => p.authenticate(request),
                Kind::EnvoyJwt(p) => {
                    // `jwt_authn` verified the signature; the key binding (RFC 9449 §7.2) is ours, with
                    // the token as the request carries it (empty when `jwt_authn` did not forward it: a
                    // bound token's proof then cannot match its `ath`, and it is refused).
                    let outcome = p.authenticate(request);
                    let (found, scheme) = extract(request, entry);
                    let (token, scheme) = match &found {
                        Found::One(token) => (token.as_ref(), scheme),
                        _ => ("", Scheme::Bearer),
                    };
                    let outcome = self.dpop_check(i, outcome, request, token, scheme).await;
                    dpop_rejection = dpop_rejection.or(Some((i, scheme)));
                    outcome
                }
            };
            match outcome {
                Outcome::Authenticated(identity) => {
                    record(&mut attempts, entry, "authenticated");
                    owned.push(place);
                    pending.retain(|p| p.place != place);
                    winner.get_or_insert(identity);
                }
                Outcome::Rejected(reason)
                    if matches!(entry.kind, Kind::Jwt)
                        && declined_as_not_its_issuer(reason)
                        && self.jwts_fall_through(i, allowed) =>
                {
                    // Not an issuer of ours: the provider taking JWTs at this place judges it, and this
                    // refusal is reported only if nothing better comes.
                    record(&mut attempts, entry, reason.as_str());
                    declined.push(place);
                    Pending::soft(&mut pending, place, i, reason);
                }
                Outcome::Rejected(reason) => {
                    record(&mut attempts, entry, reason.as_str());
                    let passes_on = matches!(entry.kind, Kind::Opaque(_))
                        && reason != DenyReason::MultipleCredentials
                        && self.later_shared_owner(i, allowed);
                    if !passes_on {
                        // The place's first rejection, when an earlier provider of it passed it on.
                        let first = pending
                            .iter()
                            .find(|p| p.place == place && !p.soft)
                            .map_or((i, reason), |p| (p.index, p.reason));
                        return self.denied(first.0, first.1, dpop_rejection);
                    }
                    // The earliest rejection of this place stands; a "not mine" before it does not.
                    if !pending.iter().any(|p| p.place == place && !p.soft) {
                        pending.retain(|p| p.place != place);
                        pending.push(Pending {
                            place,
                            index: i,
                            reason,
                            soft: false,
                        });
                    }
                }
                Outcome::Unavailable(why) => {
                    record(&mut attempts, entry, why.as_str());
                    owned.push(place);
                    pending.retain(|p| p.place != place);
                    unavailable.get_or_insert(why);
                }
                Outcome::NoCredential => record(&mut attempts, entry, "no_credential"),
            }
        }
        if let Some(p) = pending.first() {
            return self.denied(p.index, p.reason, dpop_rejection);
        }
        if let Some(why) = unavailable {
            return ChainOutcome::Unavailable(why);
        }
        if let Some(identity) = winner {
            return ChainOutcome::Authenticated(identity);
        }
        if let Some(i) = anonymous {
            let entry = &self.entries[i];
            record(&mut attempts, entry, "authenticated");
            if let Kind::Anonymous(identity) = &entry.kind {
                return ChainOutcome::Authenticated(Arc::clone(identity));
            }
        }
        ChainOutcome::Denied(Denial {
            cause: DenyCause::Credential(DenyReason::MissingCredential),
            provider: None,
            principal: None,
            message: self.deny_messages(allowed),
            dpop: None,
        })
    }

    /// Whether a later allowed opaque provider reads the same place and the config ordered them
    /// (`shared_location_order: true`), so a credential one rejects goes on to the next.
    fn later_shared_owner(&self, i: usize, allowed: Option<&[usize]>) -> bool {
        let entry = &self.entries[i];
        entry.shared_location_order
            && self
                .tables
                .place(i)
                .shared_order
                .iter()
                .any(|&later| later > i && allowed.is_none_or(|a| a.binary_search(&later).is_ok()))
    }

    fn denied(
        &self,
        i: usize,
        reason: DenyReason,
        dpop_checked: Option<(usize, Scheme)>,
    ) -> ChainOutcome {
        let entry = &self.entries[i];
        ChainOutcome::Denied(Denial {
            cause: DenyCause::Credential(reason),
            provider: Some(Arc::clone(&entry.name)),
            principal: None,
            message: entry.deny_message.clone(),
            dpop: self.dpop_challenge(dpop_checked, reason),
        })
    }

    /// Whether `entry` judges this token ([`Entry::owns`]), or, for an opaque-token provider that takes
    /// JWTs, whether it is a JWT no `jwt` provider of the route owns at this place.
    fn owns(&self, i: usize, token: &str, allowed: Option<&[usize]>) -> bool {
        let entry = &self.entries[i];
        match &entry.kind {
            Kind::Opaque(p) if p.takes_jwts() && credential::is_jws_shaped(token) => {
                !self.jwt_owns(token, i, allowed)
            }
            _ => entry.owns(token),
        }
    }

    /// Whether a `jwt` provider of the route reading entry `i`'s place owns this token's issuer (then the
    /// token is that provider's alone).
    fn jwt_owns(&self, token: &str, i: usize, allowed: Option<&[usize]>) -> bool {
        self.jwt.owns(token, |k| {
            let e = self.jwt_entries[k];
            allowed.is_none_or(|a| a.binary_search(&e).is_ok()) && self.tables.same_place(e, i)
        })
    }

    /// Whether the request carries an `Authorization` credential that no provider `allowed` on the route
    /// reads (no provider reads that header, or none with its scheme). Passed on, it would reach the
    /// upstream unverified, where an upstream trusting "the gateway checked it" would read it: it is
    /// refused instead, whatever else the request carries.
    pub fn unowned_authorization(
        &self,
        request: &RequestView<'_>,
        allowed: Option<&[usize]>,
    ) -> bool {
        let Some(value) = request.headers.get("authorization") else {
            return false;
        };
        let scheme = value
            .trim_start_matches([' ', '\t'])
            .split([' ', '\t'])
            .next()
            .unwrap_or("");
        // Who reads `Authorization` with which scheme was tabled at build (`Tables::authorization`).
        match allowed {
            None => !self.tables.authorization_all.reads(scheme),
            Some(allowed) => !allowed.iter().any(|&i| {
                self.tables
                    .authorization
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|reads| reads.reads(scheme))
            }),
        }
    }

    /// Whether a provider of the route reading entry `i`'s place takes the JWTs the `jwt` providers
    /// decline.
    fn jwts_fall_through(&self, i: usize, allowed: Option<&[usize]>) -> bool {
        self.tables
            .place(i)
            .jwt_takers
            .iter()
            .any(|&k| allowed.is_none_or(|a| a.binary_search(&k).is_ok()))
    }

    /// Applies entry `index`'s DPoP rules to what its provider answered for `token`: an authenticated
    /// token (fresh or cached) only stands if it passes them.
    async fn dpop_check(
        &self,
        index: usize,
        outcome: Outcome,
        request: &RequestView<'_>,
        token: &str,
        scheme: Scheme,
    ) -> Outcome {
        let Outcome::Authenticated(identity) = outcome else {
            return outcome;
        };
        let Some((dpop, _)) = &self.entries[index].dpop else {
            return Outcome::Authenticated(identity);
        };
        // Boxed, like the opaque providers' calls: only DPoP routes pay for its (Redis) future.
        match Box::pin(dpop.check(request, token, scheme, &identity.claims)).await {
            Ok(()) => Outcome::Authenticated(identity),
            Err(crate::dpop::Refusal::Rejected(reason)) => Outcome::Rejected(reason),
            Err(crate::dpop::Refusal::Unavailable(why)) => Outcome::Unavailable(why),
        }
    }

    /// The DPoP challenge of a credential denial: when the token came with the `DPoP` scheme or failed a
    /// DPoP rule.
    fn dpop_challenge(
        &self,
        checked: Option<(usize, Scheme)>,
        reason: DenyReason,
    ) -> Option<DpopChallenge> {
        let (index, scheme) = checked?;
        let (dpop, _) = self.entries[index].dpop.as_ref()?;
        let about_dpop = reason.as_str().starts_with("dpop_");
        (scheme == Scheme::Dpop || about_dpop)
            .then(|| dpop.challenge(reason == DenyReason::DpopNonceRequired))
    }

    /// The deny messages of the providers that could have taken a credential, joined.
    fn deny_messages(&self, allowed: Option<&[usize]>) -> Option<Arc<str>> {
        let Some(allowed) = allowed else {
            return self.tables.deny_messages_all.clone();
        };
        let messages: Vec<&str> = allowed
            .iter()
            .filter_map(|&i| self.entries.get(i)?.deny_message.as_deref())
            .collect();
        (!messages.is_empty()).then(|| Arc::from(messages.join("; ")))
    }
}

/// The credential at the entry's location; with DPoP rules and `Authorization: Bearer`, also a token
/// sent as `Authorization: DPoP <token>`.
fn extract<'a>(request: &RequestView<'a>, entry: &Entry) -> (Found<'a>, Scheme) {
    match (credential::extract(request, &entry.location), &entry.dpop) {
        (Found::None, Some((_, Some(dpop_location)))) => {
            (credential::extract(request, dpop_location), Scheme::Dpop)
        }
        (found, _) => (found, Scheme::Bearer),
    }
}

fn record(attempts: &mut Option<&mut Vec<Attempt>>, entry: &Entry, outcome: &'static str) {
    if let Some(attempts) = attempts {
        attempts.push(Attempt {
            provider: Arc::clone(&entry.name),
            outcome,
        });
    }
}

#[cfg(test)]
mod tests;
