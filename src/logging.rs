//! Log lines for two readers: a person at a terminal gets text, a log shipper gets one JSON
//! object per line. Libraries that log through the `log` crate (pingora) keep their level,
//! message and target in both, but never the source file and line the `log` bridge adds.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Starts logging to stderr at `level`, in `format` or, when none is asked for, as text
/// at a terminal and JSON anywhere else.
pub(crate) fn init(level: &str, format: Option<LogFormat>) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid LOG_LEVEL {level:?}: {e}"))?;
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    // The text format leaves out the `log` bridge's fields by itself.
    let result = match format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    }) {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}

/// One JSON object per event: `timestamp`, `level`, the event's fields (`message` among
/// them) and `target`. tracing-subscriber's own JSON format writes the `log.file`,
/// `log.line`, `log.module_path` and `log.target` fields of events bridged from the `log`
/// crate as they are: a path into the build machine's crate sources on every pingora line.
struct JsonLines;

/// Fields the `log` bridge adds to every event; `log.target` is the library's target.
const LOG_FIELDS: &str = "log.";

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields {
            map: Map::new(),
            target: None,
        };
        fields.map.insert("timestamp".into(), timestamp().into());
        fields
            .map
            .insert("level".into(), meta.level().as_str().into());
        event.record(&mut fields);
        let target = fields.target.unwrap_or_else(|| meta.target().to_string());
        fields.map.insert("target".into(), target.into());
        writeln!(writer, "{}", Value::Object(fields.map))
    }
}

/// Now, in UTC with microseconds, as tracing-subscriber writes it.
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An event's fields as JSON values, without the `log` bridge's.
struct Fields {
    map: Map<String, Value>,
    /// The `log` crate's target of a bridged event.
    target: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if let Some(bridged) = name.strip_prefix(LOG_FIELDS) {
            if bridged == "target" {
                self.target = value.as_str().map(str::to_string);
            }
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.map.insert(name.to_string(), value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// What an event logged through `log` (as pingora logs) and one through `tracing`
    /// look like as JSON lines.
    fn lines() -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .event_format(JsonLines)
            .finish();
        let bridged = tracing_log::log::Record::builder()
            .level(tracing_log::log::Level::Warn)
            .target("pingora_core::server")
            .module_path(Some("pingora_core::server"))
            .file(Some("/somewhere/src/server/mod.rs"))
            .line(Some(643))
            .args(format_args!("Server starting"))
            .build();
        tracing::subscriber::with_default(subscriber, || {
            tracing_log::format_trace(&bridged).unwrap();
            tracing::info!(target: "audit", r#type = "x", count = 3_u64, ok = true, at = %"10.0.0.1", "refused");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn bridged_lines_keep_level_message_and_target_but_no_source_file() {
        let v = &lines()[0];
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["timestamp", "level", "message", "target"]);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "Server starting");
        assert_eq!(v["target"], "pingora_core::server");
    }

    #[test]
    fn own_lines_keep_their_fields_and_types() {
        let v = &lines()[1];
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "message",
                "type",
                "count",
                "ok",
                "at",
                "target"
            ]
        );
        assert_eq!(
            (&v["level"], &v["message"], &v["target"]),
            (&"INFO".into(), &"refused".into(), &"audit".into())
        );
        assert_eq!(
            (&v["count"], &v["ok"], &v["at"]),
            (&3.into(), &true.into(), &"10.0.0.1".into())
        );
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
}
