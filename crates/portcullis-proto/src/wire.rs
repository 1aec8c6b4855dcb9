//! Envoy's `CheckRequest`, read straight from the received bytes into our [`RequestView`]: the gRPC Check
//! path's decoder. prost would build the whole message tree first (a fresh `String` key and value per
//! header in a SipHash `HashMap`, every field we never look at) and drop it after the check; here the
//! strings we read are borrowed from the message, and only the fields a check reads are read at all
//! (those `portcullis-proto/src/translate.rs` reads from a decoded `CheckRequest`, the path this one replaced):
//!
//! - `attributes.source`: `address` (a `socket_address`'s `address` and `port_value`; `pipe` and
//!   `envoy_internal_address` only count as "not a socket"), `principal`, `certificate`;
//! - `attributes.request.http`: `id`, `method`, `headers`, `path`, `host`, `scheme`, `header_map`;
//! - `attributes.context_extensions`, and `attributes.metadata_context` (the rare path: its bytes are
//!   decoded with prost, into the same JSON as before).
//!
//! # The same answer as prost
//! For the fields read, the result is what prost's decode followed by `portcullis-proto/src/translate.rs` gives: a
//! singular string or number seen twice keeps the last; a singular message seen twice is merged field by
//! field (two concatenated `CheckRequest`s are one merged request); a map keeps the last value of a
//! repeated key, and a missing key or value is `""`; the last member of a oneof wins and clears the
//! others (a later `pipe` means no socket address, a later `named_port` means port 0). A read string
//! that is not UTF-8, a read field with the wrong wire type, a truncated message, a varint longer than
//! ten bytes or past 64 bits, a key past 32 bits, tag 0 or wire type 6 or 7 are errors, as in prost.
//!
//! Fields we do not read are skipped by their wire type, exactly as prost skips unknown fields
//! (`prost::encoding::skip_field`): groups (wire types 3 and 4) are skipped up to their matching end
//! tag, nested no deeper than prost's recursion limit allows at that depth (100 from the top), and a
//! stray end tag is an error. Their content is opaque: so a message that prost rejects only because of
//! a field we never read (invalid UTF-8 in `query`, a `destination` sent as a varint, a malformed
//! `pipe`) is accepted here. Nothing a check reads can differ because of that.
//!
//! The differential tests (`wire/differential.rs`, also the `wire_request` fuzz target) hold both
//! claims: wherever prost decodes, the two views are equal; wherever this parser and prost disagree on
//! accepting, prost decoding only the read fields agrees with the parser.

// Hand-written: linted, unlike the generated code beside it.
#![warn(clippy::all)]

#[cfg(any(test, feature = "fuzzing"))]
pub mod differential;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use prost::Message as _;
use serde_json::Value;

use crate::auth::CheckRequest;
use crate::translate;
use portcullis_core::request::{Headers, RequestView};

/// Why a message could not be read. The gRPC Check answers it with `INTERNAL`, as tonic answers a
/// message prost cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid varint")]
    Varint,
    #[error("invalid field key")]
    Key,
    #[error("truncated message")]
    Truncated,
    #[error("{0}: invalid wire type")]
    WireType(&'static str),
    #[error("{0}: invalid string value: data is not UTF-8 encoded")]
    Utf8(&'static str),
    #[error("unexpected end group tag")]
    EndGroup,
    #[error("recursion limit reached")]
    RecursionLimit,
    #[error("metadata_context: {0}")]
    Metadata(prost::DecodeError),
}

/// A `CheckRequest`'s fields that a check reads, borrowed from its bytes (see [`parse`]).
#[derive(Debug)]
pub struct WireRequest<'a> {
    method: &'a str,
    path: &'a str,
    host: &'a str,
    scheme: &'a str,
    id: &'a str,
    /// Envoy's `headers` map: each name once, with the last value sent for it.
    headers: Vec<(&'a str, &'a str)>,
    /// Envoy's `header_map`, when the request is read from it (as [`translate::raw_headers`] decides).
    raw: Option<Vec<(String, String)>>,
    context_extensions: Option<HashMap<String, String>>,
    principal: &'a str,
    certificate: &'a str,
    source: Option<(&'a str, u32)>,
    metadata: Option<serde_json::Map<String, Value>>,
}

/// Reads a `CheckRequest` (the gRPC message's bytes) for the fields a check reads.
pub fn parse(buf: &[u8]) -> Result<WireRequest<'_>, WireError> {
    let mut scan = Scan::default();
    scan.check_request(buf)?;
    scan.finish()
}

// === impl WireRequest ===

impl<'a> WireRequest<'a> {
    /// Our view of the request, as `translate::request_view` builds it from a decoded `CheckRequest`.
    pub fn view(&self) -> RequestView<'_> {
        let headers = match &self.raw {
            Some(list) => Headers::List(list),
            None => Headers::Entries(&self.headers),
        };
        // Envoy's `x-request-id` (the id in its access log), else its stream id.
        let request_id = headers.get("x-request-id").unwrap_or(self.id);
        let mut view = RequestView::new(self.method, self.path, self.host, headers, request_id);
        if let Some(extensions) = &self.context_extensions {
            view = view.with_context_extensions(extensions);
        }
        view.scheme = self.scheme;
        view.peer_principal = self.principal;
        view.peer_certificate = self.certificate;
        view.metadata = self.metadata.as_ref();
        view
    }

    /// The downstream client's address and port as Envoy saw it, if a socket address (port 0 for a
    /// named port), as `translate::source_address` reads it.
    pub fn source_address(&self) -> Option<(&'a str, u32)> {
        self.source
    }
}

/// prost's recursion budget at the top of a message (its private `RECURSION_LIMIT`): each nested
/// message, map entry and group spends one. The differential tests hold the two equal.
const RECURSION_LIMIT: u32 = 100;

/// One level deeper, as prost's `message::merge` enters a nested message: an error at budget 0.
fn enter(budget: u32) -> Result<u32, WireError> {
    budget.checked_sub(1).ok_or(WireError::RecursionLimit)
}

/// What has been read so far; every occurrence of a message merges into it, as prost merges.
#[derive(Default)]
struct Scan<'a> {
    id: &'a str,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    scheme: &'a str,
    headers: MapEntries<'a>,
    raw: Vec<RawHeader<'a>>,
    principal: &'a str,
    certificate: &'a str,
    address: Address<'a>,
    context_extensions: Option<HashMap<String, String>>,
    /// Every `metadata_context` occurrence, in order.
    metadata: Vec<&'a [u8]>,
}

/// One `HeaderValue` of `header_map`.
struct RawHeader<'a> {
    key: &'a str,
    value: &'a str,
    raw_value: &'a [u8],
}

/// The `Address.address` oneof.
#[derive(Default)]
enum Address<'a> {
    #[default]
    Unset,
    Socket {
        address: &'a str,
        port: Port,
    },
    /// `pipe` or `envoy_internal_address`.
    NotSocket,
}

/// The `SocketAddress.port_specifier` oneof.
#[derive(Default, Clone, Copy)]
enum Port {
    #[default]
    Unset,
    Value(u32),
    Named,
}

// === impl Scan ===

impl<'a> Scan<'a> {
    /// `CheckRequest`: `attributes` = 1.
    fn check_request(&mut self, buf: &'a [u8]) -> Result<(), WireError> {
        let budget = RECURSION_LIMIT;
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => {
                    self.attributes(r.message(wire, "CheckRequest.attributes")?, enter(budget)?)?
                }
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `AttributeContext`: `source` = 1, `request` = 4, `context_extensions` = 10,
    /// `metadata_context` = 11.
    fn attributes(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => self.peer(r.message(wire, "AttributeContext.source")?, enter(budget)?)?,
                4 => self.request(r.message(wire, "AttributeContext.request")?, enter(budget)?)?,
                10 => {
                    let entry = r.message(wire, "AttributeContext.context_extensions")?;
                    let (key, value) = map_entry(entry, enter(budget)?)?;
                    self.context_extensions
                        .get_or_insert_with(HashMap::new)
                        .insert(key.to_owned(), value.to_owned());
                }
                11 => {
                    enter(budget)?;
                    let metadata = r.message(wire, "AttributeContext.metadata_context")?;
                    self.metadata.push(metadata);
                }
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `AttributeContext.Peer`: `address` = 1, `principal` = 4, `certificate` = 5.
    fn peer(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => self.address(r.message(wire, "Peer.address")?, enter(budget)?)?,
                4 => self.principal = r.string(wire, "Peer.principal")?,
                5 => self.certificate = r.string(wire, "Peer.certificate")?,
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `Address`: the oneof `socket_address` = 1, `pipe` = 2, `envoy_internal_address` = 3. A socket
    /// address seen again merges into the one before, unless another member came between.
    fn address(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => {
                    let socket = r.message(wire, "Address.socket_address")?;
                    let budget = enter(budget)?;
                    let (mut address, mut port) = match self.address {
                        Address::Socket { address, port } => (address, port),
                        _ => ("", Port::Unset),
                    };
                    socket_address(socket, budget, &mut address, &mut port)?;
                    self.address = Address::Socket { address, port };
                }
                // Their content is not read (see the module doc): only that they are not a socket.
                2 => {
                    r.message(wire, "Address.pipe")?;
                    self.address = Address::NotSocket;
                }
                3 => {
                    r.message(wire, "Address.envoy_internal_address")?;
                    self.address = Address::NotSocket;
                }
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `AttributeContext.Request`: `http` = 2.
    fn request(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                2 => self.http(r.message(wire, "Request.http")?, enter(budget)?)?,
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `AttributeContext.HttpRequest`: `id` = 1, `method` = 2, `headers` = 3, `path` = 4, `host` = 5,
    /// `scheme` = 6, `header_map` = 13.
    fn http(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => self.id = r.string(wire, "HttpRequest.id")?,
                2 => self.method = r.string(wire, "HttpRequest.method")?,
                3 => {
                    let entry = r.message(wire, "HttpRequest.headers")?;
                    let (key, value) = map_entry(entry, enter(budget)?)?;
                    self.headers.insert(key, value);
                }
                4 => self.path = r.string(wire, "HttpRequest.path")?,
                5 => self.host = r.string(wire, "HttpRequest.host")?,
                6 => self.scheme = r.string(wire, "HttpRequest.scheme")?,
                13 => {
                    self.header_map(r.message(wire, "HttpRequest.header_map")?, enter(budget)?)?
                }
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    /// `HeaderMap`: repeated `headers` = 1, each a `HeaderValue`: `key` = 1, `value` = 2,
    /// `raw_value` = 3 (bytes).
    fn header_map(&mut self, buf: &'a [u8], budget: u32) -> Result<(), WireError> {
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => {
                    let mut header = Reader::new(r.message(wire, "HeaderMap.headers")?);
                    let budget = enter(budget)?;
                    let mut raw = RawHeader {
                        key: "",
                        value: "",
                        raw_value: &[],
                    };
                    while let Some((tag, wire)) = header.key()? {
                        match tag {
                            1 => raw.key = header.string(wire, "HeaderValue.key")?,
                            2 => raw.value = header.string(wire, "HeaderValue.value")?,
                            3 => raw.raw_value = header.bytes(wire, "HeaderValue.raw_value")?,
                            _ => header.skip(tag, wire, budget)?,
                        }
                    }
                    self.raw.push(raw);
                }
                _ => r.skip(tag, wire, budget)?,
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<WireRequest<'a>, WireError> {
        let headers = self.headers.pairs;
        // As `translate::raw_headers`: the raw list only when the map is empty.
        let raw = (headers.is_empty() && !self.raw.is_empty()).then(|| {
            self.raw
                .iter()
                .map(|h| {
                    let value = if h.value.is_empty() {
                        String::from_utf8_lossy(h.raw_value).into_owned()
                    } else {
                        h.value.to_owned()
                    };
                    (h.key.to_ascii_lowercase(), value)
                })
                .collect()
        });
        let source = match self.address {
            Address::Socket { address, port } => Some((
                address,
                match port {
                    Port::Value(port) => port,
                    Port::Unset | Port::Named => 0,
                },
            )),
            Address::Unset | Address::NotSocket => None,
        };
        Ok(WireRequest {
            method: self.method,
            path: self.path,
            host: self.host,
            scheme: self.scheme,
            id: self.id,
            headers,
            raw,
            context_extensions: self.context_extensions,
            principal: self.principal,
            certificate: self.certificate,
            source,
            metadata: metadata(&self.metadata)?,
        })
    }
}

/// `SocketAddress`: `address` = 2, the oneof `port_value` = 3 (uint32, truncated from the varint as
/// prost does) and `named_port` = 4.
fn socket_address<'a>(
    buf: &'a [u8],
    budget: u32,
    address: &mut &'a str,
    port: &mut Port,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            2 => *address = r.string(wire, "SocketAddress.address")?,
            3 => *port = Port::Value(r.uint32(wire, "SocketAddress.port_value")?),
            4 => {
                r.string(wire, "SocketAddress.named_port")?;
                *port = Port::Named;
            }
            _ => r.skip(tag, wire, budget)?,
        }
    }
    Ok(())
}

/// One `map<string, string>` entry: `key` = 1, `value` = 2, each `""` when missing.
fn map_entry(buf: &[u8], budget: u32) -> Result<(&str, &str), WireError> {
    let (mut key, mut value) = ("", "");
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => key = r.string(wire, "map key")?,
            2 => value = r.string(wire, "map value")?,
            _ => r.skip(tag, wire, budget)?,
        }
    }
    Ok((key, value))
}

/// Envoy's filter metadata as JSON (`translate::metadata`), when the request carries any: every
/// `metadata_context` occurrence, decoded by prost as one `CheckRequest` holding only them, so that
/// they merge as they do in the whole message and prost's recursion limit counts from the same depth.
fn metadata(occurrences: &[&[u8]]) -> Result<Option<serde_json::Map<String, Value>>, WireError> {
    use prost::encoding::{encode_key, encode_varint, WireType as Wt};
    if occurrences.is_empty() {
        return Ok(None);
    }
    let mut attributes = Vec::new();
    for bytes in occurrences {
        encode_key(11, Wt::LengthDelimited, &mut attributes);
        encode_varint(bytes.len() as u64, &mut attributes);
        attributes.extend_from_slice(bytes);
    }
    let mut request = Vec::with_capacity(attributes.len() + 11);
    encode_key(1, Wt::LengthDelimited, &mut request);
    encode_varint(attributes.len() as u64, &mut request);
    request.extend_from_slice(&attributes);
    let request = CheckRequest::decode(request.as_slice()).map_err(WireError::Metadata)?;
    Ok(translate::metadata(&request))
}

/// Envoy's `headers` map as borrowed entries, in arrival order, each name once: a repeated name keeps
/// its first place and takes the last value, as a protobuf map does. A short list is searched; past
/// [`MapEntries::LINEAR`] names an index keeps a long one (a Check may carry thousands) linear.
#[derive(Default)]
struct MapEntries<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    index: Option<HashMap<&'a str, usize>>,
}

// === impl MapEntries ===

impl<'a> MapEntries<'a> {
    /// Names searched without an index: more than most requests carry.
    const LINEAR: usize = 32;

    fn insert(&mut self, key: &'a str, value: &'a str) {
        let found = match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.pairs.iter().position(|(k, _)| *k == key),
        };
        if let Some(entry) = found.and_then(|i| self.pairs.get_mut(i)) {
            entry.1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key, self.pairs.len());
        } else if self.pairs.is_empty() {
            self.pairs.reserve(16);
        }
        self.pairs.push((key, value));
        if self.index.is_none() && self.pairs.len() > Self::LINEAR {
            let index = self.pairs.iter().enumerate().map(|(i, (k, _))| (*k, i));
            self.index = Some(index.collect());
        }
    }
}

/// Protobuf wire types (the low three bits of a field key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Varint,
    SixtyFourBit,
    LengthDelimited,
    StartGroup,
    EndGroup,
    ThirtyTwoBit,
}

/// A cursor over one message's bytes. Every read checks what is left: none can panic.
struct Reader<'a> {
    rest: &'a [u8],
}

// === impl Reader ===

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { rest: buf }
    }

    /// A base-128 varint: at most ten bytes, the tenth at most 1 (no bits past 64), as prost reads it.
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return Err(WireError::Varint);
                }
                self.rest = self.rest.get(i + 1..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(WireError::Varint)
    }

    /// The next field's tag and wire type, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, WireType)>, WireError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = u32::try_from(self.varint()?).map_err(|_| WireError::Key)?;
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return Err(WireError::Key),
        };
        match key >> 3 {
            0 => Err(WireError::Key),
            tag => Ok(Some((tag, wire))),
        }
    }

    fn advance(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        let (head, rest) = self.rest.split_at_checked(n).ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(head)
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self, wire: WireType, field: &'static str) -> Result<&'a [u8], WireError> {
        if wire != WireType::LengthDelimited {
            return Err(WireError::WireType(field));
        }
        let len = self.varint()?;
        self.advance(len)
    }

    /// A nested message's bytes.
    fn message(&mut self, wire: WireType, field: &'static str) -> Result<&'a [u8], WireError> {
        self.bytes(wire, field)
    }

    fn string(&mut self, wire: WireType, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(wire, field)?).map_err(|_| WireError::Utf8(field))
    }

    fn uint32(&mut self, wire: WireType, field: &'static str) -> Result<u32, WireError> {
        if wire != WireType::Varint {
            return Err(WireError::WireType(field));
        }
        // prost keeps the low 32 bits of a larger varint.
        Ok(self.varint()? as u32)
    }

    /// Skips a field we do not read, as `prost::encoding::skip_field` does with `budget` (prost's
    /// recursion budget where the field sits): a group up to its matching end tag, each nested group
    /// spending one, without recursion here.
    fn skip(&mut self, tag: u32, wire: WireType, budget: u32) -> Result<(), WireError> {
        if budget == 0 {
            return Err(WireError::RecursionLimit);
        }
        if wire != WireType::StartGroup {
            return self.skip_value(wire);
        }
        // The tags of the groups open, innermost last: at most `budget` of them.
        let mut open = vec![tag];
        while let Some(&innermost) = open.last() {
            let Some((tag, wire)) = self.key()? else {
                return Err(WireError::Truncated);
            };
            if wire == WireType::EndGroup {
                if tag != innermost {
                    return Err(WireError::EndGroup);
                }
                open.pop();
                continue;
            }
            // A field inside `open.len()` groups has that much less budget.
            let depth = u32::try_from(open.len()).unwrap_or(u32::MAX);
            if budget <= depth {
                return Err(WireError::RecursionLimit);
            }
            match wire {
                WireType::StartGroup => open.push(tag),
                _ => self.skip_value(wire)?,
            }
        }
        Ok(())
    }

    /// Skips one value that is not a group.
    fn skip_value(&mut self, wire: WireType) -> Result<(), WireError> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::SixtyFourBit => self.advance(8).map(drop),
            WireType::LengthDelimited => {
                let len = self.varint()?;
                self.advance(len).map(drop)
            }
            WireType::ThirtyTwoBit => self.advance(4).map(drop),
            WireType::StartGroup | WireType::EndGroup => Err(WireError::EndGroup),
        }
    }
}
