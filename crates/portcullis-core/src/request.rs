//! Our own borrowed view of a check request: what providers and policy may read, with no protobuf type in
//! sight. `portcullis-proto/src/wire.rs` builds it from the gRPC message's bytes, `server/http.rs` from an HTTP request;
//! tests build it directly.

use std::collections::HashMap;

/// The request headers, as Envoy sent them.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    /// Envoy's `headers` map: lower-case names, repeated headers already joined with `,`.
    Map(&'a HashMap<String, String>),
    /// Envoy's `headers` map as `portcullis-proto/src/wire.rs` reads it, borrowed from the message: each name once (the
    /// last value sent for it, as a protobuf map keeps), looked up by exact name like [`Headers::Map`].
    Entries(&'a [(&'a str, &'a str)]),
    /// Envoy's `header_map` (with `encode_raw_headers`): one entry per header line.
    List(&'a [(String, String)]),
    /// Pairs owned by the caller (the `check`/`explain` command line, tests).
    Pairs(&'a [(&'a str, &'a str)]),
}

// === impl Headers ===

impl<'a> Headers<'a> {
    /// The value of a header by its lower-case name. With [`Headers::List`], repeated headers are not joined:
    /// see [`Headers::count`].
    pub fn get(&self, name: &str) -> Option<&'a str> {
        match *self {
            Headers::Map(map) => map.get(name).map(String::as_str),
            Headers::Entries(entries) => entries.iter().find(|(k, _)| *k == name).map(|(_, v)| *v),
            Headers::List(list) => list
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            Headers::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v),
        }
    }

    /// Every value of a header by its lower-case name, one per line: [`Headers::List`] and [`Headers::Pairs`]
    /// keep each line, Envoy's map holds one (already joined).
    pub fn values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        let (one, list, pairs) = match *self {
            Headers::Map(map) => (map.get(name).map(String::as_str), None, None),
            Headers::Entries(entries) => (
                entries.iter().find(|(k, _)| *k == name).map(|(_, v)| *v),
                None,
                None,
            ),
            Headers::List(list) => (None, Some(list), None),
            Headers::Pairs(pairs) => (None, None, Some(pairs)),
        };
        let list = list
            .into_iter()
            .flatten()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let pairs = pairs
            .into_iter()
            .flatten()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        one.into_iter().chain(list).chain(pairs)
    }

    /// How many header lines carry this name.
    pub fn count(&self, name: &str) -> usize {
        match *self {
            Headers::Map(map) => usize::from(map.contains_key(name)),
            Headers::Entries(entries) => usize::from(entries.iter().any(|(k, _)| *k == name)),
            Headers::List(list) => list
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .count(),
            Headers::Pairs(pairs) => pairs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .count(),
        }
    }

    /// How many headers (fields, for a list; names, for Envoy's merged map).
    pub fn len(&self) -> usize {
        match *self {
            Headers::Map(map) => map.len(),
            Headers::Entries(entries) => entries.len(),
            Headers::List(list) => list.len(),
            Headers::Pairs(pairs) => pairs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every header name (as Envoy sent them, lower-case for its map), with repeats for `List` and `Pairs`.
    pub fn names(&self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        Box::new(self.entries().map(|(name, _)| name))
    }

    /// Every header as (name, value), one per line for `List` and `Pairs`.
    pub fn entries(&self) -> Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a> {
        match *self {
            Headers::Map(map) => Box::new(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Headers::Entries(entries) => Box::new(entries.iter().copied()),
            Headers::List(list) => Box::new(list.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Headers::Pairs(pairs) => Box::new(pairs.iter().copied()),
        }
    }
}

/// One request under check.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `http` or `https` as Envoy saw the request (empty when it sent none).
    pub scheme: &'a str,
    /// The path without its query string.
    pub path: &'a str,
    /// The query string without `?` (empty when there is none).
    pub query: &'a str,
    pub host: &'a str,
    pub headers: Headers<'a>,
    /// Envoy's request id (`x-request-id`), for log correlation.
    pub request_id: &'a str,
    /// Envoy's per-route `check_settings.context_extensions` (empty when none).
    pub context_extensions: Option<&'a HashMap<String, String>>,
    /// The client identity Envoy verified on the TLS connection (`source.principal`, e.g. a SPIFFE ID).
    pub peer_principal: &'a str,
    /// The client certificate, URL-encoded PEM, when Envoy sends it (`include_peer_certificate`).
    pub peer_certificate: &'a str,
    /// Envoy's `metadata_context.filter_metadata`, by namespace, as JSON.
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    /// Splits Envoy's `path` (which carries the query string) into path and query.
    pub fn new(
        method: &'a str,
        path_and_query: &'a str,
        host: &'a str,
        headers: Headers<'a>,
        request_id: &'a str,
    ) -> RequestView<'a> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        RequestView {
            method,
            scheme: "",
            path,
            query,
            host,
            headers,
            request_id,
            context_extensions: None,
            peer_principal: "",
            peer_certificate: "",
            metadata: None,
        }
    }

    /// The same request with Envoy's per-route context extensions.
    pub fn with_context_extensions(mut self, extensions: &'a HashMap<String, String>) -> Self {
        self.context_extensions = Some(extensions);
        self
    }

    /// A context extension by key.
    pub fn context_extension(&self, key: &str) -> Option<&'a str> {
        self.context_extensions?.get(key).map(String::as_str)
    }
}

/// A lower-case HTTP header field name (RFC 9110 §5.1 token), as Envoy sends them.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_not_part_of_the_path() {
        let pairs = [("Authorization", "Bearer x")];
        let view = RequestView::new("GET", "/a/b?token=x&y=1", "h", Headers::Pairs(&pairs), "");
        assert_eq!(view.path, "/a/b");
        assert_eq!(view.query, "token=x&y=1");
        assert_eq!(view.headers.get("authorization"), Some("Bearer x"));
    }

    #[test]
    fn raw_header_lists_keep_repeats() {
        let list = vec![
            ("x-auth-subject".to_owned(), "a".to_owned()),
            ("X-Auth-Subject".to_owned(), "b".to_owned()),
        ];
        let headers = Headers::List(&list);
        assert_eq!(headers.count("x-auth-subject"), 2);
        assert_eq!(headers.names().count(), 2);
    }
}
