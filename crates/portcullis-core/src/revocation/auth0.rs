//! Auth0 log events as denylist entries. An Auth0 Custom Webhook log stream posts a JSON array of
//! `{"log_id": …, "data": {"type": …, "user_id": …, "date": …, …}}`; the event's `user_id` is the `sub` of
//! that user's tokens. These Auth0 log event type codes become entries; every other event is ignored:
//! - `slo` (Successful Logout), `srrt` (Successful Refresh Token Revocation), `scp` (Success Change
//!   Password), `sdu` (Successful User Deletion), `du` (Deleted User), `limit_wc` (Blocked Account): a
//!   `sub` entry for `user_id`;
//! - `sapi` (Success API Operation), only for these Management API calls: `DELETE /api/v2/users/{id}`,
//!   `PATCH /api/v2/users/{id}` with `blocked: true` and `DELETE /api/v2/users/{id}/sessions` (a `sub`
//!   entry for the user in the path), `DELETE /api/v2/sessions/{id}` (a `sid` entry).

use serde::Deserialize;
use serde_json::Value;

use super::{Entry, Kind};

/// One event of a log stream batch. Unknown fields are ignored: Auth0 adds fields over time.
#[derive(Debug, Deserialize)]
pub struct LogEvent {
    pub log_id: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// RFC 3339, e.g. `2026-01-26T15:28:56.917Z`.
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub details: Option<Value>,
}

/// The entry an event makes, if it revokes anything. It is made at the event's `date` (never later than
/// `now`), so a redelivered event makes the same entry; `issuer` scopes it (`revocation.auth0_issuer`).
pub fn entry_for(
    event: &LogEvent,
    issuer: Option<&str>,
    ttl_seconds: u64,
    now: i64,
) -> Option<Entry> {
    let data = &event.data;
    let (kind, value) = match data.kind.as_str() {
        "slo" | "srrt" | "scp" | "sdu" | "du" | "limit_wc" => (Kind::Sub, data.user_id.clone()?),
        "sapi" => management_call(data.details.as_ref()?)?,
        _ => return None,
    };
    let revoked_at = data
        .date
        .as_deref()
        .and_then(parse_rfc3339)
        .map_or(now, |at| at.min(now));
    super::new_entry(
        kind,
        value,
        issuer.map(str::to_owned),
        ttl_seconds,
        revoked_at,
    )
    .ok()
}

/// A Management API call (`sapi`) that ends a user's or a session's access.
fn management_call(details: &Value) -> Option<(Kind, String)> {
    let request = details.get("request")?;
    let method = request.get("method")?.as_str()?.to_ascii_lowercase();
    let path = request.get("path")?.as_str()?;
    let path = path.split('?').next().unwrap_or(path);
    if let Some(rest) = path.strip_prefix("/api/v2/sessions/") {
        return (method == "delete" && !rest.is_empty() && !rest.contains('/'))
            .then(|| Some((Kind::Sid, percent_decode(rest)?)))
            .flatten();
    }
    let rest = path.strip_prefix("/api/v2/users/")?;
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if user.is_empty() {
        return None;
    }
    let revokes = match (method.as_str(), tail) {
        ("delete", "") | ("delete", "sessions") => true,
        ("patch", "") => {
            request
                .get("body")
                .and_then(|b| b.get("blocked"))
                .and_then(Value::as_bool)
                == Some(true)
        }
        _ => false,
    };
    revokes.then(|| Some((Kind::Sub, percent_decode(user)?)))?
}

/// `%XX` decoding of a path segment (Auth0 user ids carry `|` as `%7C`). None for bad escapes or UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Unix seconds of an RFC 3339 date-time (`Z` or a `±hh:mm` offset; fractions dropped).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> LogEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2016-01-26T15:28:56.917Z"),
            Some(1_453_822_136)
        );
        assert_eq!(
            parse_rfc3339("2016-01-26T16:28:56+01:00"),
            Some(1_453_822_136)
        );
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_rfc3339("2016-01-26"), None);
        assert_eq!(parse_rfc3339("2016-13-26T15:28:56Z"), None);
        assert_eq!(parse_rfc3339("2016-01-26T15:28:56"), None);
    }

    #[test]
    fn revoking_events_become_sub_entries_at_their_date() {
        let now = 2_000_000_000;
        for kind in ["slo", "srrt", "scp", "sdu", "du", "limit_wc"] {
            let e = event(json!({"log_id": "1", "data": {
                "type": kind, "user_id": "auth0|abc", "date": "2016-01-26T15:28:56.917Z"}}));
            let entry = entry_for(&e, None, 60, now).unwrap();
            assert_eq!((entry.kind, entry.value.as_str()), (Kind::Sub, "auth0|abc"));
            assert_eq!(entry.revoked_at, 1_453_822_136);
            assert_eq!(entry.expires_at, 1_453_822_136 + 60);
        }
        // A date in the future is clamped to now.
        let e = event(
            json!({"log_id": "1", "data": {"type": "slo", "user_id": "u", "date": "2100-01-01T00:00:00Z"}}),
        );
        assert_eq!(
            entry_for(&e, Some("https://t/"), 60, now)
                .unwrap()
                .revoked_at,
            now
        );
    }

    #[test]
    fn other_events_are_ignored() {
        for kind in ["s", "f", "ss", "fcp", "seacft", "sapi", "slo"] {
            let e = event(json!({"log_id": "1", "data": {"type": kind}}));
            assert_eq!(entry_for(&e, None, 60, 0), None, "{kind}");
        }
        let e = event(json!({"log_id": "1", "data": {"type": "s", "user_id": "u"}}));
        assert_eq!(entry_for(&e, None, 60, 0), None);
    }

    #[test]
    fn management_calls_that_end_access_are_recognised() {
        let sapi = |method: &str, path: &str, body: Value| {
            let e = event(
                json!({"log_id": "1", "data": {"type": "sapi", "user_id": "admin|1",
                "details": {"request": {"method": method, "path": path, "body": body}}}}),
            );
            entry_for(&e, None, 60, 0).map(|e| (e.kind, e.value))
        };
        let sub = |v: &str| Some((Kind::Sub, v.to_owned()));
        assert_eq!(
            sapi("delete", "/api/v2/users/auth0%7Cabc", json!({})),
            sub("auth0|abc")
        );
        assert_eq!(
            sapi(
                "PATCH",
                "/api/v2/users/auth0%7Cabc",
                json!({"blocked": true})
            ),
            sub("auth0|abc")
        );
        assert_eq!(
            sapi("delete", "/api/v2/users/auth0%7Cabc/sessions", json!({})),
            sub("auth0|abc")
        );
        assert_eq!(
            sapi("delete", "/api/v2/sessions/ses-1", json!({})),
            Some((Kind::Sid, "ses-1".to_owned()))
        );
        assert_eq!(
            sapi("patch", "/api/v2/users/a", json!({"blocked": false})),
            None
        );
        assert_eq!(sapi("patch", "/api/v2/users/a", json!({"name": "x"})), None);
        assert_eq!(sapi("get", "/api/v2/users/a", json!({})), None);
        assert_eq!(sapi("delete", "/api/v2/users/a%zz", json!({})), None);
        assert_eq!(sapi("delete", "/api/v2/clients/a", json!({})), None);
    }
}
