//! Finding a provider's credential in a request: a header with a scheme (`Authorization: Bearer <token>`,
//! RFC 6750 §2.1), a raw header, a cookie, or a query parameter.

use std::borrow::Cow;

use crate::config::CredentialLocation;
use crate::decision::DenyReason;
use crate::request::RequestView;

/// Credentials longer than this are refused before any provider sees them.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// What a request holds at one credential location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a> {
    /// Nothing there (or an `Authorization` header with another scheme): not this provider's.
    None,
    /// One credential, borrowed from the request when it needs no decoding.
    One(Cow<'a, str>),
    /// Something there that is not a usable credential: `invalid_request` (400), except a too-large one.
    Malformed(DenyReason),
}

/// Reads the credential at `location`.
pub fn extract<'a>(request: &RequestView<'a>, location: &CredentialLocation) -> Found<'a> {
    let found = match location {
        CredentialLocation::Header { name, scheme } => header(request, name, scheme.as_deref()),
        CredentialLocation::Cookie(name) => cookie(request, name),
        CredentialLocation::Query(name) => query(request, name),
    };
    match found {
        Found::One(value) if value.len() > MAX_CREDENTIAL_BYTES => {
            Found::Malformed(DenyReason::TokenTooLarge)
        }
        // A scheme's token passed the b64token test, which admits no control character.
        Found::One(value)
            if !matches!(
                location,
                CredentialLocation::Header {
                    scheme: Some(_),
                    ..
                }
            ) && has_control(&value) =>
        {
            Found::Malformed(DenyReason::MalformedCredential)
        }
        other => other,
    }
}

/// Control characters (Unicode `Cc`): byte-wise for ASCII (a token is), by `char` otherwise.
fn has_control(value: &str) -> bool {
    if value.is_ascii() {
        value.bytes().any(|b| b.is_ascii_control())
    } else {
        value.chars().any(char::is_control)
    }
}

fn header<'a>(request: &RequestView<'a>, name: &str, scheme: Option<&str>) -> Found<'a> {
    let Some(value) = request.headers.get(name) else {
        return Found::None;
    };
    if request.headers.count(name) > 1 {
        return Found::Malformed(DenyReason::MultipleCredentials);
    }
    let value = value.trim_matches([' ', '\t']);
    let Some(scheme) = scheme else {
        // A raw credential: Envoy joins repeated headers with ",".
        return match value {
            "" => Found::Malformed(DenyReason::EmptyCredential),
            v if v.contains(',') => Found::Malformed(DenyReason::MultipleCredentials),
            v => Found::One(Cow::Borrowed(v)),
        };
    };
    let (given, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !given.eq_ignore_ascii_case(scheme) {
        return Found::None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Found::Malformed(DenyReason::EmptyCredential);
    }
    if !is_b64token(token) {
        return Found::Malformed(if token.contains(',') {
            DenyReason::MultipleCredentials
        } else {
            DenyReason::MalformedCredential
        });
    }
    Found::One(Cow::Borrowed(token))
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// In blocks of 64 bytes, each tested without a branch per byte, so that the compiler turns a block into
/// a few vector compares (a table lookup per byte does not vectorise); a bad block ends the scan.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .as_bytes()
            .chunks(64)
            .all(|block| block.iter().fold(true, |ok, &b| ok & is_b64token_byte(b)))
}

/// One byte of a `b64token` before its padding: ALPHA / DIGIT / `-` `.` `_` `~` `+` `/`.
#[inline(always)]
fn is_b64token_byte(b: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z and moves no other byte into a-z.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// One value, or `MultipleCredentials` when the same name carries different values.
fn single<'a>(mut values: impl Iterator<Item = Cow<'a, str>>) -> Found<'a> {
    let Some(first) = values.next() else {
        return Found::None;
    };
    for other in values {
        if other != first {
            return Found::Malformed(DenyReason::MultipleCredentials);
        }
    }
    if first.is_empty() {
        return Found::Malformed(DenyReason::EmptyCredential);
    }
    Found::One(first)
}

/// Cookies (RFC 6265 §5.4): Envoy joins several `cookie` headers with `; `; a raw header list (the HTTP
/// listener, `encode_raw_headers`) keeps each line, and every line is read: two sessions on two lines are
/// two credentials, and a second line is never left unchecked.
fn cookie<'a>(request: &RequestView<'a>, name: &str) -> Found<'a> {
    single(
        request
            .headers
            .values("cookie")
            .flat_map(|line| line.split([';', ',']))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v.trim().trim_matches('"'))),
    )
}

fn query<'a>(request: &RequestView<'a>, name: &str) -> Found<'a> {
    if request.query.is_empty() {
        return Found::None;
    }
    single(
        url::form_urlencoded::parse(request.query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v),
    )
}

/// A compact JWS has exactly three dot-separated parts; anything else is an opaque token.
pub fn is_jws_shaped(token: &str) -> bool {
    // `find` looks for the byte with memchr, not byte by byte.
    let Some(first) = token.find('.') else {
        return false;
    };
    let rest = &token[first + 1..];
    match rest.find('.') {
        Some(second) => !rest[second + 1..].contains('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;

    #[test]
    fn the_b64token_byte_test_admits_exactly_rfc_6750s_characters() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), expected, "byte {b:#04x}");
        }
        // A bad byte anywhere in a long token, in the first block or a later one, fails it.
        let long = "a".repeat(200);
        assert!(is_b64token(&long));
        assert!(is_b64token(&format!("{long}==")));
        for at in [0, 63, 64, 130, 199] {
            let mut bad = long.clone().into_bytes();
            bad[at] = b'\x01';
            assert!(!is_b64token(std::str::from_utf8(&bad).unwrap()), "at {at}");
        }
        assert!(!is_b64token("=="));
        assert!(!is_b64token("a=b"));
    }

    fn bearer() -> CredentialLocation {
        CredentialLocation::default()
    }

    fn read<'a>(
        pairs: &'a [(&'a str, &'a str)],
        path: &'a str,
        at: &CredentialLocation,
    ) -> Found<'a> {
        extract(
            &RequestView::new("GET", path, "h", Headers::Pairs(pairs), ""),
            at,
        )
    }

    fn one(s: &str) -> Found<'_> {
        Found::One(Cow::Borrowed(s))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(
            read(&[("authorization", "Bearer abc.def.ghi")], "/p", &bearer()),
            one("abc.def.ghi")
        );
        assert_eq!(
            read(&[("authorization", "bearer   abc")], "/p", &bearer()),
            one("abc")
        );
        assert_eq!(
            read(&[("authorization", "BEARER abc==")], "/p", &bearer()),
            one("abc==")
        );
    }

    #[test]
    fn other_schemes_and_absence_are_not_ours() {
        assert_eq!(read(&[], "/p", &bearer()), Found::None);
        assert_eq!(
            read(&[("authorization", "Basic dXNlcjpwYXNz")], "/p", &bearer()),
            Found::None
        );
        let token_scheme = CredentialLocation::Header {
            name: "authorization".into(),
            scheme: Some("token".into()),
        };
        assert_eq!(
            read(&[("authorization", "token ghp_abc")], "/p", &token_scheme),
            one("ghp_abc")
        );
        assert_eq!(
            read(&[("authorization", "Bearer ghp_abc")], "/p", &token_scheme),
            Found::None
        );
    }

    #[test]
    fn malformed_bearer_credentials_are_invalid_requests() {
        let m = |r| Found::Malformed(r);
        assert_eq!(
            read(&[("authorization", "Bearer")], "/p", &bearer()),
            m(DenyReason::EmptyCredential)
        );
        assert_eq!(
            read(&[("authorization", "Bearer a b")], "/p", &bearer()),
            m(DenyReason::MalformedCredential)
        );
        assert_eq!(
            read(
                &[("authorization", "Bearer a.b.c,Bearer d.e.f")],
                "/p",
                &bearer()
            ),
            m(DenyReason::MultipleCredentials)
        );
        assert_eq!(
            read(
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
                "/p",
                &bearer()
            ),
            m(DenyReason::MultipleCredentials)
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_BYTES + 1));
        assert_eq!(
            read(&[("authorization", &huge)], "/p", &bearer()),
            m(DenyReason::TokenTooLarge)
        );
    }

    #[test]
    fn raw_headers_cookies_and_query_parameters() {
        let raw = CredentialLocation::Header {
            name: "x-api-key".into(),
            scheme: None,
        };
        assert_eq!(read(&[("x-api-key", " k1 ")], "/p", &raw), one("k1"));
        assert_eq!(
            read(&[("x-api-key", "k1,k2")], "/p", &raw),
            Found::Malformed(DenyReason::MultipleCredentials)
        );

        let cookie = CredentialLocation::Cookie("session".into());
        assert_eq!(
            read(&[("cookie", "a=1; session=s3; b=2")], "/p", &cookie),
            one("s3")
        );
        assert_eq!(
            read(&[("cookie", "session=s3; session=s3")], "/p", &cookie),
            one("s3")
        );
        assert_eq!(
            read(&[("cookie", "session=s3; session=s4")], "/p", &cookie),
            Found::Malformed(DenyReason::MultipleCredentials)
        );
        assert_eq!(read(&[("cookie", "other=1")], "/p", &cookie), Found::None);

        let query = CredentialLocation::Query("access_token".into());
        assert_eq!(
            read(&[], "/p?x=1&access_token=a%2Bb", &query),
            Found::One(Cow::Owned("a+b".into()))
        );
        assert_eq!(
            read(&[], "/p?access_token=a&access_token=b", &query),
            Found::Malformed(DenyReason::MultipleCredentials)
        );
        assert_eq!(read(&[], "/p?x=1", &query), Found::None);
    }

    #[test]
    fn jws_shape() {
        assert!(is_jws_shaped("a.b.c"));
        assert!(!is_jws_shaped("a.b.c.d.e"));
        assert!(!is_jws_shaped("opaque"));
    }
}
