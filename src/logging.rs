//! muster's own log lines, on stderr: `muster: LEVEL message key=value ...`, or one JSON object
//! per line when `$MUSTER_LOG_FORMAT` is `json`. The level comes from `-v` (info, `-vv` debug,
//! `-vvv` trace), else from `$MUSTER_LOG` (error, warn, info, debug, trace, off); by default
//! info when running a configuration and error for `muster -- CMD`, which stays as quiet as
//! tini.

pub use tracing_subscriber::filter::LevelFilter;

/// Installs the subscriber. `verbose` (the number of `-v`) picks the level when it is not 0;
/// otherwise `$MUSTER_LOG` does, and `default` when that is unset; a bad value falls back to
/// `default` and says so.
pub fn init(default: LevelFilter, verbose: u8) {
    let raw = std::env::var("MUSTER_LOG").unwrap_or_default();
    let (level, bad) = match raw.trim().to_ascii_lowercase().as_str() {
        _ if verbose == 1 => (LevelFilter::INFO, false),
        _ if verbose == 2 => (LevelFilter::DEBUG, false),
        _ if verbose > 2 => (LevelFilter::TRACE, false),
        "" => (default, false),
        "info" => (LevelFilter::INFO, false),
        "error" => (LevelFilter::ERROR, false),
        "warn" => (LevelFilter::WARN, false),
        "debug" => (LevelFilter::DEBUG, false),
        "trace" => (LevelFilter::TRACE, false),
        "off" => (LevelFilter::OFF, false),
        _ => (default, true),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(|| Line(Vec::new()))
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .event_format(Format {
            json: std::env::var("MUSTER_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")),
        })
        .init();
    if bad {
        tracing::warn!(value = %raw, "MUSTER_LOG is not one of error, warn, info, debug, trace, off; using the default");
    }
}

/// Lines a monitor may leave unread before it loses some.
const MONITOR_BACKLOG: usize = 512;

/// Where muster's log lines also go: the `serf monitor` clients of the agent RPC.
static MONITORS: std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<String>>> =
    std::sync::Mutex::new(Vec::new());

/// Every log line muster writes from now on, as long as the receiver lives (a slow reader
/// loses lines, never holds logging back).
pub fn monitor() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(MONITOR_BACKLOG);
    if let Ok(mut list) = MONITORS.lock() {
        list.retain(|m| !m.is_closed());
        list.push(tx);
    }
    rx
}

/// One formatted line: written to stderr whole when dropped, and passed to the monitors.
struct Line(Vec<u8>);

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &self.0);
        let Ok(mut list) = MONITORS.lock() else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0).trim_end().to_owned();
        list.retain(|m| !m.is_closed());
        for m in list.iter() {
            let _ = m.try_send(text.clone());
        }
    }
}

struct Format {
    json: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Format
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        if self.json {
            let mut fields = JsonFields(String::new());
            event.record(&mut fields);
            return writeln!(writer, "{{\"level\":\"{level}\"{}}}", fields.0);
        }
        write!(writer, "muster: {level} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Collects an event's fields as `,"key":value` pairs; `message` is the message.
struct JsonFields(String);

impl JsonFields {
    fn key(&mut self, field: &tracing::field::Field) {
        self.0.push_str(",\"");
        self.0.push_str(field.name());
        self.0.push_str("\":");
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.key(field);
        self.0.push_str(&value.to_string());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.key(field);
        self.0.push_str(&value.to_string());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        push_json_string(&mut self.0, value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        push_json_string(&mut self.0, &format!("{value:?}"));
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a string cannot fail; keep the line valid JSON all the same.
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        super::push_json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
    }
}
