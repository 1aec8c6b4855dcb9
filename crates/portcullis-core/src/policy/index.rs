//! The route index: which routes can take a request, found by its host and the first segment of its path
//! instead of trying every route in turn, so the cost of choosing a route does not grow with the number of
//! tenants (one host or path prefix each).
//!
//! Each route is filed under its host (exact, a `*.` suffix, or any) and the first path segment every
//! path it takes begins with (or any). A request looks up its host, each suffix of its host at a `.`, and
//! "any host"; in each, its first segment and "any segment": at most a few lists of route numbers in file
//! order, merged in order, each candidate tried with its full matcher. The first that matches is the
//! route the linear walk would have chosen: a route that can take the request is always in one of those
//! lists (its host and segment are those of the request, or "any"), and the lists are walked in file order.
//! `policy::tests` holds that property over random route sets and requests.

use std::collections::HashMap;

use super::matcher::{HostKey, Matcher};
use crate::request::RequestView;

/// A host with more labels than the index looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooDeep;

/// How many lists a lookup merges at most; a host with more labels than that falls back to the walk.
const MAX_LISTS: usize = 32;

/// The index of one policy's routes, for paths as sent and for canonical paths.
#[derive(Debug, Default)]
pub(super) struct RouteIndex {
    raw: Table,
    /// `None` when every route files under the same keys for canonical paths (the usual case: a host, or
    /// a path pattern already canonical): the raw table serves both, and a large policy keeps one copy.
    canonical: Option<Table>,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<Box<str>, Segments>,
    suffix: HashMap<Box<str>, Segments>,
    any: Segments,
}

/// Route numbers (ascending) by the first path segment they need, and those that need none.
#[derive(Debug, Default)]
struct Segments {
    by_segment: HashMap<Box<str>, Vec<u32>>,
    any: Vec<u32>,
}

// === impl RouteIndex ===

impl RouteIndex {
    pub(super) fn build<'a>(matchers: impl Iterator<Item = &'a Matcher>) -> RouteIndex {
        let matchers: Vec<&Matcher> = matchers.collect();
        let mut index = RouteIndex::default();
        for (i, matcher) in matchers.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index.raw.insert(matcher.keys(false), i);
        }
        if matchers.iter().any(|m| m.keys(false) != m.keys(true)) {
            let mut canonical = Table::default();
            for (i, matcher) in matchers.iter().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                canonical.insert(matcher.keys(true), i);
            }
            index.canonical = Some(canonical);
        }
        index
    }

    /// The first route number (in file order) for which `accept` holds, trying only the routes the
    /// request's host and first path segment can reach (`canonical`: for a canonical path). `Ok(None)` when
    /// none does; `Err(TooDeep)` for a host with more labels than the index merges (the caller walks every
    /// route).
    pub(super) fn first(
        &self,
        canonical: bool,
        request: &RequestView<'_>,
        accept: impl Fn(usize) -> bool,
    ) -> Result<Option<usize>, TooDeep> {
        let table = match (&self.canonical, canonical) {
            (Some(table), true) => table,
            _ => &self.raw,
        };
        let host = normalized_host(request.host);
        let segment = first_segment(request.path);
        let mut lists: [&[u32]; MAX_LISTS] = [&[]; MAX_LISTS];
        let mut count = 0;
        let mut push = |segments| push_lists(&mut lists, &mut count, segments, segment);
        if let Some(segments) = table.exact.get(&*host) {
            push(segments)?;
        }
        if !table.suffix.is_empty() {
            // `*.example.com` takes any name under example.com, never example.com itself: every suffix
            // that starts at a `.` after the first character.
            for (at, _) in host.match_indices('.').filter(|&(at, _)| at > 0) {
                if let Some(segments) = table.suffix.get(&host[at..]) {
                    push(segments)?;
                }
            }
        }
        push(&table.any)?;
        let lists = &mut lists[..count];
        loop {
            // The smallest head among the lists: the next candidate in file order.
            let Some((which, &route)) = lists
                .iter()
                .enumerate()
                .filter_map(|(i, list)| list.first().map(|r| (i, r)))
                .min_by_key(|&(_, r)| *r)
            else {
                return Ok(None);
            };
            if accept(route as usize) {
                return Ok(Some(route as usize));
            }
            lists[which] = &lists[which][1..];
        }
    }
}

/// Adds `segments`' list for `segment` and its "any segment" list (the non-empty ones).
fn push_lists<'t>(
    lists: &mut [&'t [u32]; MAX_LISTS],
    count: &mut usize,
    segments: &'t Segments,
    segment: Option<&str>,
) -> Result<(), TooDeep> {
    if *count + 2 > MAX_LISTS {
        return Err(TooDeep);
    }
    if let Some(list) = segment.and_then(|s| segments.by_segment.get(s)) {
        lists[*count] = list;
        *count += 1;
    }
    if !segments.any.is_empty() {
        lists[*count] = &segments.any;
        *count += 1;
    }
    Ok(())
}

// === impl Table ===

impl Table {
    fn insert(&mut self, (host, segment): (HostKey<'_>, Option<&str>), route: u32) {
        let segments = match host {
            HostKey::Exact(name) => self.exact.entry(name.into()).or_default(),
            HostKey::Suffix(suffix) => self.suffix.entry(suffix.into()).or_default(),
            HostKey::Any => &mut self.any,
        };
        match segment {
            Some(segment) => segments
                .by_segment
                .entry(segment.into())
                .or_default()
                .push(route),
            None => segments.any.push(route),
        }
    }
}

/// The request's host as routes name it: no port, no trailing dot, lower case (borrowed unless it had
/// upper-case letters).
fn normalized_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = super::matcher::without_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// The first segment of a path (between its leading `/` and the next one); `None` for a path that does
/// not start with `/` (no indexed pattern takes it).
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(""))
}
