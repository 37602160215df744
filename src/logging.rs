//! muster's own log lines, on stderr: `muster: LEVEL message key=value ...`. The level comes
//! from `$MUSTER_LOG` (error, warn, info, debug, trace, off); by default info when running a
//! configuration and error for `muster -- CMD`, which stays as quiet as tini.

pub use tracing_subscriber::filter::LevelFilter;

/// Installs the subscriber with `default` as the level when `$MUSTER_LOG` is unset; a bad
/// value falls back to `default` and says so.
pub fn init(default: LevelFilter) {
    let raw = std::env::var("MUSTER_LOG").unwrap_or_default();
    let (level, bad) = match raw.trim().to_ascii_lowercase().as_str() {
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
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .event_format(Format)
        .init();
    if bad {
        tracing::warn!(value = %raw, "MUSTER_LOG is not one of error, warn, info, debug, trace, off; using the default");
    }
}

struct Format;

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
        write!(writer, "muster: {level} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
