//! Wall-clock times as operators read and write them (RFC 3339, UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T18:31:41.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = unix_ms(t);
    let secs = (ms / 1000) as i64;
    let dt = OffsetDateTime::from_unix_timestamp(secs)
        .map(|d| d + time::Duration::milliseconds((ms % 1000) as i64));
    match dt {
        Ok(d) => {
            let (y, mo, da) = (d.year(), d.month() as u8, d.day());
            let (h, mi, s) = (d.hour(), d.minute(), d.second());
            format!(
                "{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
                d.millisecond()
            )
        }
        Err(_) => format!("@{ms}ms"),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Parses an RFC 3339 time (`2026-12-02T18:31:41Z`, with an optional
/// fraction and offset).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    let dt = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|e| {
        Error::msg(format!(
            "{s:?} is not an RFC 3339 time (like 2026-12-02T18:31:41Z): {e}"
        ))
    })?;
    let nanos = dt.unix_timestamp_nanos();
    if nanos < 0 {
        return Err(Error::msg(format!("{s:?} is before 1970")));
    }
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos.min(u128::from(u64::MAX) as i128) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds_and_parses_back() {
        let t = from_unix_ms(1_796_236_301_123);
        let s = rfc3339(t);
        assert_eq!(s, "2026-12-02T18:31:41.123Z");
        assert_eq!(parse_rfc3339(&s).ok(), Some(t));
        assert_eq!(parse_rfc3339("2026-12-02T19:31:41.123+01:00").ok(), Some(t));
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        let e = parse_rfc3339("yesterday").err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("RFC 3339")));
    }
}
