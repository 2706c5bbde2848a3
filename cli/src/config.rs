//! The YAML config file, with Flink's key names.
//!
//! Keys may be written flat (`execution.checkpointing.interval: 6s`) or
//! nested (`execution: {checkpointing: {interval: 6s}}`), as Flink accepts.
//! Unknown keys are warned about by name. Secret values (`s3.secret-key`,
//! `s3.access-key`) are never printed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Keys this program reads.
pub const KNOWN_KEYS: &[&str] = &[
    "state.backend.type",
    "state.backend",
    "execution.checkpointing.dir",
    "state.checkpoints.dir",
    "execution.checkpointing.interval",
    "execution.checkpointing.timeout",
    "execution.checkpointing.mode",
    "execution.checkpointing.incremental",
    "state.backend.incremental",
    "state.backend.changelog.enabled",
    "execution.checkpointing.num-retained",
    "state.checkpoints.num-retained",
    "execution.checkpointing.externalized-checkpoint-retention",
    "execution.checkpointing.tolerable-failed-checkpoints",
    "execution.checkpointing.min-pause",
    "state.backend.memory.max-state-size",
    "state.backend.rocksdb.localdir",
    "state.backend.rocksdb.write-back.entries",
    "state.backend.rocksdb.memory.fixed-per-tm",
    "state.backend.rocksdb.memory.write-buffer-ratio",
    "state.backend.rocksdb.writebuffer.size",
    "state.backend.rocksdb.rescaling.compact-clipped-ranges",
    "state.backend.rocksdb.timer-service.factory",
    "parallelism.default",
    "pipeline.max-parallelism",
    "s3.endpoint",
    "s3.path.style.access",
    "s3.access-key",
    "s3.secret-key",
    "s3.region",
];

/// Flat `key -> value` settings read from a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlinkConfig {
    values: BTreeMap<String, String>,
}

fn flatten(prefix: &str, value: &serde_norway::Value, out: &mut BTreeMap<String, String>) -> Result<()> {
    use serde_norway::Value;
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => bail!("config key {other:?} under {prefix:?} is not a string"),
                };
                let full = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&full, v, out)?;
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        Value::Number(n) => {
            out.insert(prefix.to_owned(), n.to_string());
        }
        Value::Bool(b) => {
            out.insert(prefix.to_owned(), b.to_string());
        }
        Value::Null => {}
        other => bail!("config value of {prefix:?} must be a scalar, found {other:?}"),
    }
    Ok(())
}

impl FlinkConfig {
    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Self> {
        let value: serde_norway::Value = serde_norway::from_str(text).context("the config file is not valid YAML")?;
        let mut values = BTreeMap::new();
        if !value.is_null() {
            if !value.is_mapping() {
                bail!("the config file must be a mapping of Flink keys to values");
            }
            flatten("", &value, &mut values)?;
        }
        for key in values.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                tracing::warn!(key = %key, "unknown config key is ignored");
                eprintln!("warning: unknown config key `{key}` is ignored");
            }
        }
        Ok(Self { values })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// The first of `keys` that is set.
    pub fn get(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.values.get(*k)).map(String::as_str)
    }

    /// A boolean value.
    pub fn get_bool(&self, keys: &[&str]) -> Result<Option<bool>> {
        self.get(keys)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => bail!("{} must be true or false, not {other:?}", keys[0]),
            })
            .transpose()
    }

    /// Whether `state.backend.rocksdb.timer-service.factory` is `HEAP`
    /// (Flink's values: `ROCKSDB`, the default, or `HEAP`).
    pub fn rocksdb_heap_timers(&self) -> Result<bool> {
        let key = "state.backend.rocksdb.timer-service.factory";
        let Some(value) = self.get(&[key]) else {
            return Ok(false);
        };
        match value.to_ascii_uppercase().as_str() {
            "ROCKSDB" => Ok(false),
            "HEAP" => Ok(true),
            _ => bail!("{key} must be ROCKSDB or HEAP, not {value:?}"),
        }
    }

    /// A non-negative integer value.
    pub fn get_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        self.get(keys)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("{} must be a non-negative integer, not {v:?}", keys[0]))
            })
            .transpose()
    }

    /// A memory size (`64mb`, `1 gb`, `512kb`, plain bytes), as Flink's
    /// `MemorySize` reads it.
    pub fn get_memory_size(&self, keys: &[&str]) -> Result<Option<usize>> {
        self.get(keys)
            .map(|v| parse_memory_size(v).with_context(|| format!("in {}", keys[0])))
            .transpose()
    }

    /// A fraction in (0, 1).
    pub fn get_fraction(&self, keys: &[&str]) -> Result<Option<f64>> {
        self.get(keys)
            .map(|v| match v.trim().parse::<f64>() {
                Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
                _ => bail!("{} must be a number between 0 and 1 (exclusive), not {v:?}", keys[0]),
            })
            .transpose()
    }

    /// The `s3.*` settings.
    pub fn s3_options(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with("s3."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Splits `12 unit` into its leading number and its (trimmed) unit; the
/// error names the `what` and shows an `example`.
fn number_and_unit<'a>(text: &'a str, what: &str, example: &str) -> Result<(u64, &'a str)> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n = number
        .parse()
        .with_context(|| format!("{what} {text:?} must be a number with a unit such as {example}"))?;
    Ok((n, unit.trim()))
}

/// Parses Flink-style memory sizes: a number and a unit (`b`, `kb`, `mb`,
/// `gb`, `tb`, or their one-letter and long forms, case-insensitive, powers
/// of 1024), or plain bytes.
pub fn parse_memory_size(text: &str) -> Result<usize> {
    let (n, unit) = number_and_unit(text, "memory size", "64mb")?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        other => bail!("memory size {text:?} has an unknown unit {other:?} (use b, kb, mb, gb or tb)"),
    };
    n.checked_mul(1 << shift)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .with_context(|| format!("memory size {text:?} is too large"))
}

/// Parses Flink-style durations: `6s`, `500ms`, `2min`, `1h`, or plain
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let (n, unit) = number_and_unit(text, "duration", "6s or 500ms")?;
    let ms = match unit {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60_000,
        "h" | "hour" | "hours" => n * 3_600_000,
        other => bail!("duration {text:?} has an unknown unit {other:?} (use ms, s, min or h)"),
    };
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_keys_are_read() {
        let c = FlinkConfig::parse(
            "state.backend.type: hashmap\nexecution:\n  checkpointing:\n    interval: 500ms\n    num-retained: 3\n",
        )
        .unwrap();
        assert_eq!(c.get(&["state.backend.type"]), Some("hashmap"));
        assert_eq!(c.get(&["execution.checkpointing.interval"]), Some("500ms"));
        assert_eq!(c.get(&["execution.checkpointing.num-retained"]), Some("3"));
    }

    #[test]
    fn malformed_config_is_an_error() {
        assert!(FlinkConfig::parse("a: [1, 2").is_err());
        assert!(FlinkConfig::parse("- just\n- a list\n").is_err());
        assert!(FlinkConfig::parse("x: {y: [1]}").is_err());
    }

    #[test]
    fn integers_are_checked() {
        let key = "state.backend.rocksdb.write-back.entries";
        let c = FlinkConfig::parse(&format!("{key}: 4096\n")).unwrap();
        assert_eq!(c.get_usize(&[key]).unwrap(), Some(4096));
        assert_eq!(FlinkConfig::default().get_usize(&[key]).unwrap(), None);
        let bad = FlinkConfig::parse(&format!("{key}: -1\n")).unwrap();
        let message = bad.get_usize(&[key]).unwrap_err().to_string();
        assert!(message.contains(key) && message.contains("-1"), "{message}");
    }

    #[test]
    fn memory_sizes_parse_like_flink() {
        assert_eq!(parse_memory_size("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_memory_size("1 GB").unwrap(), 1 << 30);
        assert_eq!(parse_memory_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_memory_size("4096").unwrap(), 4096);
        for bad in ["", "mb", "12 parsecs", "-1mb", "99999999999tb"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?}");
        }
        let key = "state.backend.rocksdb.memory.fixed-per-tm";
        let c = FlinkConfig::parse(&format!("{key}: 12 furlongs\n")).unwrap();
        let message = format!("{:#}", c.get_memory_size(&[key]).unwrap_err());
        assert!(message.contains(key) && message.contains("furlongs"), "{message}");
    }

    #[test]
    fn fractions_are_checked() {
        let key = "state.backend.rocksdb.memory.write-buffer-ratio";
        let c = FlinkConfig::parse(&format!("{key}: 0.25\n")).unwrap();
        assert_eq!(c.get_fraction(&[key]).unwrap(), Some(0.25));
        for bad in ["0", "1", "1.5", "half"] {
            let c = FlinkConfig::parse(&format!("{key}: {bad}\n")).unwrap();
            let message = c.get_fraction(&[key]).unwrap_err().to_string();
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn the_timer_service_factory_is_rocksdb_or_heap() {
        let key = "state.backend.rocksdb.timer-service.factory";
        assert!(!FlinkConfig::default().rocksdb_heap_timers().unwrap());
        let heap = FlinkConfig::parse(&format!("{key}: HEAP\n")).unwrap();
        assert!(heap.rocksdb_heap_timers().unwrap());
        let rocksdb = FlinkConfig::parse(&format!("{key}: rocksdb\n")).unwrap();
        assert!(!rocksdb.rocksdb_heap_timers().unwrap());
        let bad = FlinkConfig::parse(&format!("{key}: disk\n")).unwrap();
        let message = bad.rocksdb_heap_timers().unwrap_err().to_string();
        assert!(message.contains(key) && message.contains("disk"), "{message}");
    }

    #[test]
    fn durations_parse_like_flink() {
        assert_eq!(parse_duration("6s").unwrap().as_millis(), 6000);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2 min").unwrap().as_millis(), 120_000);
        assert_eq!(parse_duration("250").unwrap().as_millis(), 250);
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
