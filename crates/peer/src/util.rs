//! Small pure helpers: wire IDs, version comparison, time formatting, URLs.

use std::time::{SystemTime, UNIX_EPOCH};

/// An ID as etcd writes it on the wire: lowercase hex, no padding.
pub fn id_hex(id: u64) -> String {
    format!("{id:x}")
}

/// Parses a hex ID as etcd does (`ParseUint(s, 16)`: padding and upper case accepted).
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// `(major, minor)` of a semver string such as `3.5.1` or `3.5.0-rc.1`.
/// `None` when it is not `N.N.N...` (etcd would refuse it).
pub fn major_minor(v: &str) -> Option<(u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let _patch: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor))
}

/// Current time in Go's RFC3339Nano layout (UTC, trailing zeros of the
/// fraction trimmed), as the probing handler writes it.
pub fn rfc3339_nano_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nano(d.as_secs(), d.subsec_nanos())
}

/// Formats seconds + nanoseconds since the epoch as RFC3339Nano in UTC.
pub fn rfc3339_nano(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A peer URL split into what a dialer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrl {
    /// `https` → TLS
    pub tls: bool,
    /// host without brackets (IPv6) — for SNI / certificate name
    pub host: String,
    /// `host:port` for the TCP connect and the `Host` header
    pub authority: String,
}

/// Parses `http(s)://host:port[/]` (etcd peer URLs carry no path).
pub fn parse_peer_url(url: &str) -> Option<PeerUrl> {
    let uri: http::Uri = url.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = uri.host()?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    };
    Some(PeerUrl {
        tls,
        host: bare,
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unpadded_lowercase() {
        assert_eq!(id_hex(0x6ad828d59d630), "6ad828d59d630");
        assert_eq!(id_hex(u64::MAX), "ffffffffffffffff");
        assert_eq!(parse_id("00AB"), Some(0xab));
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("x1"), None);
        assert_eq!(parse_id("+1"), None);
        assert_eq!(parse_id("10000000000000000"), None);
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("3.5.1"), Some((3, 5)));
        assert_eq!(major_minor("3.4.23"), Some((3, 4)));
        assert_eq!(major_minor("3.5.0-rc.0"), Some((3, 5)));
        assert_eq!(major_minor("not_decided"), None);
        assert_eq!(major_minor("3.5"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000, 120_000_000),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400, 1),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn urls() {
        let u = parse_peer_url("https://127.0.0.1:2380").unwrap();
        assert!(u.tls);
        assert_eq!(u.authority, "127.0.0.1:2380");
        let u = parse_peer_url("http://[::1]:2380/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority, "[::1]:2380");
        assert!(parse_peer_url("unix:///x").is_none());
    }
}
