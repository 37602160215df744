//! RFC 5424 messages and RFC 6587 octet-counted framing.

use std::fmt::Write as _;

/// Where a line came from, as a syslog severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `err` (3): a service's stderr.
    Error,
    /// `info` (6): a service's stdout.
    Info,
}

impl Severity {
    fn code(self) -> u8 {
        match self {
            Severity::Error => 3,
            Severity::Info => 6,
        }
    }
}

/// The private enterprise number used in muster's structured-data id (`muster@32473`:
/// 32473 is the number RFC 5612 reserves for documentation examples).
pub const SD_ID: &str = "muster@32473";

/// Longest HOSTNAME and APP-NAME RFC 5424 allows.
const HOSTNAME_MAX: usize = 255;
const APP_MAX: usize = 48;

/// One line to format.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Syslog facility (1 = user, 16..=23 = local0..local7).
    pub facility: u8,
    /// Severity, from the stream.
    pub severity: Severity,
    /// Wall-clock time of the line: seconds and microseconds since the Unix epoch.
    pub time: (u64, u32),
    /// HOSTNAME (sanitized here).
    pub hostname: &'a str,
    /// APP-NAME: the service (sanitized here).
    pub app: &'a str,
    /// PROCID: the process that wrote the line, when known.
    pub pid: Option<u32>,
    /// Identifies this run of muster, so sequence numbers are unique per boot.
    pub boot: &'a str,
    /// Sequence number of the line within the boot.
    pub seq: u64,
    /// Whether this is the continuation of a line that was split.
    pub cont: bool,
    /// The bytes of the line, any bytes.
    pub text: &'a [u8],
}

/// Keeps PRINTUSASCII (33..=126) up to `max` bytes; `-` (NILVALUE) when nothing is left.
/// Collectors build file names from these fields, so `/` is replaced too.
fn header_field(out: &mut Vec<u8>, value: &str, max: usize) {
    let start = out.len();
    for b in value.bytes().take(max) {
        out.push(match b {
            b'/' => b'_',
            33..=126 => b,
            _ => b'_',
        });
    }
    if out.len() == start {
        out.push(b'-');
    }
}

/// Escapes a PARAM-VALUE: `"`, `\` and `]` get a backslash.
fn param_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 in UTC with microseconds: `2026-11-24T15:04:05.123456Z`.
pub fn timestamp(secs: u64, micros: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros.min(999_999)
    );
    s
}

/// Appends the RFC 5424 message for `line` (no framing, no trailing newline).
pub fn format(line: &Line<'_>, out: &mut Vec<u8>) {
    let pri = u16::from(line.facility.min(23)) * 8 + u16::from(line.severity.code());
    out.extend_from_slice(format!("<{pri}>1 ").as_bytes());
    out.extend_from_slice(timestamp(line.time.0, line.time.1).as_bytes());
    out.push(b' ');
    header_field(out, line.hostname, HOSTNAME_MAX);
    out.push(b' ');
    header_field(out, line.app, APP_MAX);
    out.push(b' ');
    match line.pid {
        Some(p) => out.extend_from_slice(p.to_string().as_bytes()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - [");
    out.extend_from_slice(SD_ID.as_bytes());
    out.extend_from_slice(b" boot=\"");
    param_value(out, line.boot);
    out.extend_from_slice(format!("\" seq=\"{}\"", line.seq).as_bytes());
    if line.cont {
        out.extend_from_slice(b" cont=\"1\"");
    }
    out.push(b']');
    if !line.text.is_empty() {
        // No BOM: the bytes go as they came, whatever their encoding.
        out.push(b' ');
        out.extend_from_slice(line.text);
    }
}

/// Wraps a message in RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &[u8]) -> Line<'_> {
        Line {
            facility: 1,
            severity: Severity::Info,
            time: (1_795_964_645, 123_456),
            hostname: "web-1",
            app: "app",
            pid: Some(42),
            boot: "b00t",
            seq: 7,
            cont: false,
            text,
        }
    }

    fn formatted(l: &Line<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        format(l, &mut out);
        out
    }

    #[test]
    fn a_line_becomes_one_rfc5424_message() {
        assert_eq!(
            String::from_utf8(formatted(&line(b"GET / 200"))).unwrap(),
            "<14>1 2026-11-29T15:04:05.123456Z web-1 app 42 - [muster@32473 boot=\"b00t\" seq=\"7\"] GET / 200"
        );
        let mut l = line(b"");
        l.severity = Severity::Error;
        l.facility = 16;
        l.pid = None;
        l.cont = true;
        assert_eq!(
            String::from_utf8(formatted(&l)).unwrap(),
            "<131>1 2026-11-29T15:04:05.123456Z web-1 app - - [muster@32473 boot=\"b00t\" seq=\"7\" cont=\"1\"]"
        );
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(timestamp(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(
            timestamp(4_107_542_399, 999_999),
            "2100-02-28T23:59:59.999999Z"
        );
    }

    #[test]
    fn header_fields_are_sanitized_and_sd_values_escaped() {
        let mut l = line(b"x");
        l.hostname = "";
        l.app = "../evil app/with a very long name that goes on and on and on";
        l.boot = "a\"b]c\\";
        let text = String::from_utf8(formatted(&l)).unwrap();
        assert!(
            text.contains(" - .._evil_app_with_a_very_long_name_that_goes_on_a 42 "),
            "{text}"
        );
        assert!(text.contains(r#"boot="a\"b\]c\\""#), "{text}");
    }

    /// What `syslog_rfc5424`, a parser written by others, reads back from one line.
    fn parsed(l: &Line<'_>) -> syslog_rfc5424::SyslogMessage {
        let text = String::from_utf8(formatted(l)).unwrap();
        syslog_rfc5424::parse_message(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn an_independent_parser_reads_every_field_back() {
        use syslog_rfc5424::message::ProcId;
        use syslog_rfc5424::{SyslogFacility, SyslogSeverity};
        let mut l = line(b"GET /a?b=[c] \"d\" 200");
        l.boot = "a\"b]c\\";
        let m = parsed(&l);
        assert_eq!(m.facility, SyslogFacility::LOG_USER);
        assert_eq!(m.severity, SyslogSeverity::SEV_INFO);
        assert_eq!(m.timestamp, Some(1_795_964_645));
        assert_eq!(m.timestamp_nanos, Some(123_456_000));
        assert_eq!(m.hostname.as_deref(), Some("web-1"));
        assert_eq!(m.appname.as_deref(), Some("app"));
        assert_eq!(m.procid, Some(ProcId::PID(42)));
        assert_eq!(m.msgid, None);
        let sd = |name: &str| m.sd.find_tuple(SD_ID, name).map(String::as_str);
        assert_eq!(sd("boot"), Some("a\"b]c\\"), "escaped, then read back");
        assert_eq!(sd("seq"), Some("7"));
        assert_eq!(sd("cont"), None);
        assert_eq!(m.msg, "GET /a?b=[c] \"d\" 200");

        let mut l = line(b"");
        (l.severity, l.facility, l.pid, l.cont) = (Severity::Error, 23, None, true);
        l.hostname = "";
        let m = parsed(&l);
        assert_eq!(m.facility, SyslogFacility::LOG_LOCAL7);
        assert_eq!(m.severity, SyslogSeverity::SEV_ERR);
        assert_eq!((m.hostname, m.procid), (None, None), "NILVALUE");
        assert_eq!(
            m.sd.find_tuple(SD_ID, "cont").map(String::as_str),
            Some("1")
        );
        assert_eq!(m.msg, "");

        let m = parsed(&line("  h\u{e9}llo \u{2713} ".as_bytes()));
        assert_eq!(
            m.msg, "  h\u{e9}llo \u{2713} ",
            "leading and trailing spaces kept"
        );
    }

    #[test]
    fn message_bytes_pass_through_untouched() {
        let raw = [0xff, 0xfe, 0, b'\n', 0xc3, 0x28];
        let out = formatted(&line(&raw));
        assert!(out.ends_with(&raw));
        let mut framed = Vec::new();
        octet_counted(&out, &mut framed);
        assert!(framed.starts_with(format!("{} <14>1", out.len()).as_bytes()));
    }
}
