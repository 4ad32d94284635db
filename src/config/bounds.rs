//! The allowed range of every numeric setting, in one place.
//!
//! Every number of `layers.yaml`, of the agent manifests (`agents/*.yaml`) and of the
//! command line is checked against one of the [`Range`]s below before anything uses it,
//! so no value can make a consumer panic (a semaphore with more permits than tokio
//! allows, a `Duration` that does not fit), wrap around (`retries + 1`) or wait for
//! centuries. A value outside its range is a configuration (or usage) error that states
//! the range. docs/configuration.md ("Ranges") lists them; keep the two in step.
//!
//! [`Number`] is what the raw structs read where an integer is expected: any YAML
//! number, so that `retries: 18446744073709551615` is reported with its range rather
//! than as a type error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::error::Diagnostic;
use super::node::{Loc, Sources};

/// Days in the longest duration any setting accepts.
pub const MAX_DAYS: i64 = 365;
/// One year in seconds: the longest duration any setting accepts.
pub const MAX_SECONDS: i64 = MAX_DAYS * 24 * 60 * 60;
/// Extra attempts after a failure (`retries`).
pub const MAX_RETRIES: i64 = 100;
/// Units at once, for every slot count (well below tokio's `Semaphore::MAX_PERMITS`).
pub const MAX_PARALLEL: i64 = 100_000;
/// 1 PiB in MiB: the largest memory setting.
pub const MAX_MEMORY_MB: i64 = 1 << 30;
/// 1 GiB: the largest in-memory byte buffer (output head/tail, a WebSocket frame).
pub const MAX_BUFFER_BYTES: i64 = 1 << 30;
/// The largest `max_failures`.
pub const MAX_FAILURES: i64 = 1_000_000_000;
/// `execution_order`, `priority` and `priority_order` lie within ± this.
pub const MAX_ORDER: i64 = 1_000_000;
/// Events queued per WebSocket client, or kept for resumption.
pub const MAX_QUEUE: i64 = 10_000_000;
/// The largest niceness increment (the kernel's lowest priority is 19).
pub const MAX_NICE: i64 = 19;
/// Lines a listing command shows (`--background-results N`, `history --slowest N`).
pub const MAX_LISTED: i64 = 100_000;

/// `retries`.
pub const RETRIES: Range = Range::int(0, MAX_RETRIES);
/// `execution.max_parallel_tests`, `execution.background_max_slots`,
/// `max_parallel_instances` (categories and `resource_limits`), `--jobs`, the
/// background agent's `max_concurrent`, `max_clients`.
pub const PARALLEL: Range = Range::int(1, MAX_PARALLEL)
    .when_zero("0 would never start anything: leave the key out for no limit of its own");
/// `--partition K/N`: N (and K) shards.
pub const SHARDS: Range = Range::int(1, MAX_PARALLEL);
/// `max_memory_mb` (execution, categories, `resource_limits`) and `rlimit_as_mb`.
pub const MEMORY_MB: Range = Range::int(1, MAX_MEMORY_MB)
    .unit(Unit::MiB)
    .when_zero("a limit of 0 MiB would stop every unit: leave the key out for no limit");
/// `min_memory_mb`: an estimate, 0 means none.
pub const MEMORY_ESTIMATE_MB: Range = Range::int(0, MAX_MEMORY_MB).unit(Unit::MiB);
/// `execution.log_file_max_mb`: 0 keeps no output in the log file.
pub const LOG_FILE_MB: Range = Range::int(0, MAX_MEMORY_MB).unit(Unit::MiB);
/// `execution.keep_runs`: run directories kept.
pub const KEEP_RUNS: Range = Range::int(1, MAX_PARALLEL)
    .when_zero("0 would delete the run that just finished: the smallest is 1");
/// `execution.runs_max_mb`: the size cap of `.runner/runs/`.
pub const RUNS_MAX_MB: Range = Range::int(1, MAX_MEMORY_MB).unit(Unit::MiB);
/// `execution.output_head_bytes`, `execution.output_tail_bytes`.
pub const OUTPUT_BYTES: Range = Range::int(0, MAX_BUFFER_BYTES).unit(Unit::Bytes);
/// `max_frame_bytes` of the progress streamer.
pub const FRAME_BYTES: Range = Range::int(1024, MAX_BUFFER_BYTES).unit(Unit::Bytes);
/// `max_cpu_percent` (execution and `resource_limits`): a share of all cores.
pub const CPU_PERCENT: Range = Range::int(1, 100)
    .unit(Unit::Percent)
    .when_zero("0% of the cores would run nothing: leave the key out for no CPU limit");
/// `success_criteria.min_pass_rate`.
pub const PASS_RATE: Range = Range::int(0, 100).unit(Unit::Percent).fractional();
/// `memory_pressure_percent` of the resource manager (0: never pause).
pub const PRESSURE_PERCENT: Range = Range::int(0, 100).unit(Unit::Percent).fractional();
/// `success_criteria.max_failures`.
pub const FAILURES: Range = Range::int(0, MAX_FAILURES);
/// `execution_order`, `priority`, `priority_order`.
pub const ORDER: Range = Range::int(-MAX_ORDER, MAX_ORDER);
/// `client_queue` and `ring_size` of the progress streamer.
pub const QUEUE: Range = Range::int(1, MAX_QUEUE);
/// `nice` of the background agent: an increment, never a raise.
pub const NICE: Range = Range::int(0, MAX_NICE);
/// `--background-results N`, `runner history --slowest N`.
pub const LISTED: Range = Range::int(1, MAX_LISTED);

/// `timeout_seconds`, `slow_seconds`, `startup_timeout_seconds`.
pub const TIMEOUT_SECONDS: Range = Range::duration(Unit::Seconds);
/// `execution.global_timeout_minutes`, `max_duration_minutes`, `--background-timeout`.
pub const TIMEOUT_MINUTES: Range = Range::duration(Unit::Minutes);
/// `execution.kill_grace_seconds`: 0 kills at once.
pub const KILL_GRACE_SECONDS: Range = Range::duration(Unit::Seconds).or_zero();
/// `execution.retry_backoff_ms`, `bypass_window_ms`: 0 means no wait.
pub const WAIT_MS: Range = Range::int(0, MAX_SECONDS * 1000).unit(Unit::Millis);
/// `heartbeat_ms` and `sample_interval_ms` of the agent manifests.
pub const INTERVAL_MS: Range = Range::int(10, MAX_SECONDS * 1000)
    .unit(Unit::Millis)
    .when_zero("an interval of 0 would busy-loop: the shortest is 10 ms");
/// `stale_after_ms` of the agent manifests.
pub const STALE_AFTER_MS: Range = Range::int(100, MAX_SECONDS * 1000)
    .unit(Unit::Millis)
    .when_zero("0 would report every agent stale at once: the shortest is 100 ms");
/// `retention_days` of the background agent (0: delete finished runs at the next queue).
pub const RETENTION_DAYS: Range = Range::int(0, MAX_DAYS).unit(Unit::Days);
/// `--websocket-linger SECONDS`.
pub const LINGER_SECONDS: Range = Range::int(0, MAX_SECONDS).unit(Unit::Seconds);

/// What a setting counts; durations are converted with [`Unit::seconds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain number (units, attempts, slots, events, an order).
    Count,
    /// Bytes.
    Bytes,
    /// Mebibytes.
    MiB,
    /// Percent.
    Percent,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
    /// Minutes.
    Minutes,
    /// Days.
    Days,
}

impl Unit {
    /// Seconds per unit, for durations.
    pub const fn seconds(self) -> Option<f64> {
        match self {
            Unit::Millis => Some(0.001),
            Unit::Seconds => Some(1.0),
            Unit::Minutes => Some(60.0),
            Unit::Days => Some(86_400.0),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Bytes => "bytes",
            Unit::MiB => "MiB",
            Unit::Percent => "percent",
            Unit::Millis => "ms",
            Unit::Seconds => "seconds",
            Unit::Minutes => "minutes",
            Unit::Days => "days",
        }
    }
}

/// The allowed values of one setting: `min..=max` (or `min` excluded: "greater than
/// 0"), whole numbers only unless [`Range::fractional`], in [`Unit`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// The smallest value.
    pub min: i64,
    /// The largest value.
    pub max: i64,
    /// `min` itself is not allowed (a duration "greater than 0").
    pub exclusive_min: bool,
    /// Only whole numbers.
    pub integer: bool,
    /// What the number counts.
    pub unit: Unit,
    /// Help shown when the value is 0 and 0 is not allowed: why 0 makes no sense.
    pub zero_help: Option<&'static str>,
}

impl Range {
    /// Whole numbers from `min` to `max`.
    pub const fn int(min: i64, max: i64) -> Self {
        Range {
            min,
            max,
            exclusive_min: false,
            integer: true,
            unit: Unit::Count,
            zero_help: None,
        }
    }

    /// A duration in `unit`s, fractions allowed, greater than 0 and at most one year.
    pub const fn duration(unit: Unit) -> Self {
        let max = match unit {
            Unit::Millis => MAX_SECONDS * 1000,
            Unit::Minutes => MAX_SECONDS / 60,
            Unit::Days => MAX_DAYS,
            _ => MAX_SECONDS,
        };
        Range {
            min: 0,
            max,
            exclusive_min: true,
            integer: false,
            unit,
            zero_help: Some(
                "a duration of 0 would be over at once: leave the key out for no limit (or the default)",
            ),
        }
    }

    /// The same range in `unit`s.
    pub const fn unit(self, unit: Unit) -> Self {
        Range { unit, ..self }
    }

    /// The same range, fractions allowed.
    pub const fn fractional(self) -> Self {
        Range {
            integer: false,
            ..self
        }
    }

    /// The same range, 0 allowed.
    pub const fn or_zero(self) -> Self {
        Range {
            exclusive_min: false,
            zero_help: None,
            ..self
        }
    }

    /// The same range, with `help` when the value is 0.
    pub const fn when_zero(self, help: &'static str) -> Self {
        Range {
            zero_help: Some(help),
            ..self
        }
    }

    /// True when `v` is allowed.
    pub fn contains(&self, v: Number) -> bool {
        match v {
            Number::Int(i) => {
                let above = if self.exclusive_min {
                    i > i128::from(self.min)
                } else {
                    i >= i128::from(self.min)
                };
                above && i <= i128::from(self.max)
            }
            Number::Float(f) => {
                if !f.is_finite() || (self.integer && f.fract() != 0.0) {
                    return false;
                }
                let above = if self.exclusive_min {
                    f > self.min as f64
                } else {
                    f >= self.min as f64
                };
                above && f <= self.max as f64
            }
        }
    }

    /// `v` as a number, when allowed.
    pub fn check(&self, v: Number) -> Result<f64, OutOfRange> {
        if !self.contains(v) {
            return Err(OutOfRange { range: *self, v });
        }
        Ok(match v {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        })
    }

    /// `v` as an integer, when allowed (for ranges of whole numbers).
    pub fn check_int(&self, v: Number) -> Result<i64, OutOfRange> {
        if !self.contains(v) {
            return Err(OutOfRange { range: *self, v });
        }
        // In range, so it fits: |v| <= MAX_* < 2^53.
        Ok(match v {
            Number::Int(i) => i as i64,
            Number::Float(f) => f as i64,
        })
    }

    /// `v` (in this range's unit) as a duration, when allowed.
    pub fn check_duration(&self, v: Number) -> Result<Duration, OutOfRange> {
        let n = self.check(v)?;
        let per_unit = self.unit.seconds().unwrap_or(1.0);
        // At most one year: always representable.
        Ok(match (self.unit, v) {
            (Unit::Millis, Number::Int(i)) => Duration::from_millis(i as u64),
            _ => Duration::from_secs_f64(n * per_unit),
        })
    }

    /// Parses a command-line value; the error is the range, for clap to print after
    /// "invalid value 'X' for '--flag'".
    pub fn parse(&self, s: &str) -> Result<f64, String> {
        let v = Number::parse(s).ok_or_else(|| format!("expected {self}"))?;
        self.check(v).map_err(|e| e.for_cli())
    }

    /// [`Range::parse`] for ranges of whole numbers.
    pub fn parse_int(&self, s: &str) -> Result<i64, String> {
        let v = Number::parse(s).ok_or_else(|| format!("expected {self}"))?;
        self.check_int(v).map_err(|e| e.for_cli())
    }

    fn size_note(&self) -> String {
        let bytes = match self.unit {
            Unit::Bytes => self.max as u128,
            Unit::MiB => (self.max as u128) << 20,
            _ => return String::new(),
        };
        match binary_size(bytes) {
            Some(size) => format!(" ({size})"),
            None => String::new(),
        }
    }
}

/// "an integer from 0 to 100", "a duration greater than 0 and at most 525600 minutes
/// (365 days)", ...: what "expected" is followed by.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (min, max) = (self.min, self.max);
        let unit = self.unit.name();
        match self.unit {
            Unit::Count if self.integer => write!(f, "an integer from {min} to {max}"),
            Unit::Count => write!(f, "a number from {min} to {max}"),
            Unit::Percent if self.integer => {
                write!(f, "a whole percentage from {min} to {max}")
            }
            Unit::Percent => write!(f, "a percentage from {min} to {max}"),
            Unit::Bytes | Unit::MiB => write!(
                f,
                "a whole number of {unit} from {min} to {max}{}",
                self.size_note()
            ),
            Unit::Millis | Unit::Seconds | Unit::Minutes | Unit::Days => {
                let year = if self.unit == Unit::Days {
                    ""
                } else {
                    " (365 days)"
                };
                let what = if self.integer {
                    format!("a whole number of {unit}")
                } else {
                    "a duration".to_string()
                };
                if self.exclusive_min {
                    write!(
                        f,
                        "{what} greater than {min} and at most {max} {unit}{year}"
                    )
                } else if self.integer {
                    write!(f, "{what} from {min} to {max}{year}")
                } else {
                    write!(f, "{what} from {min} to {max} {unit}{year}")
                }
            }
        }
    }
}

/// `bytes` as "1 GiB", "1 PiB", ... when it is an exact power of 1024 (from KiB).
fn binary_size(bytes: u128) -> Option<String> {
    const NAMES: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut n = bytes;
    let mut i = 0;
    while n >= 1024 && n.is_multiple_of(1024) && i < NAMES.len() {
        n /= 1024;
        i += 1;
    }
    (i > 0).then(|| format!("{n} {}", NAMES[i - 1]))
}

/// A value outside its [`Range`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfRange {
    /// The range it is outside of.
    pub range: Range,
    /// The value.
    pub v: Number,
}

impl OutOfRange {
    /// Why 0 makes no sense here, when the value is 0 and 0 is not allowed.
    pub fn help(&self) -> Option<&'static str> {
        self.v.is_zero().then_some(self.range.zero_help).flatten()
    }

    /// The message for a command-line value (clap prints the value and the flag; the
    /// zero help speaks of configuration keys, so it is left out).
    pub(crate) fn for_cli(&self) -> String {
        format!("expected {}", self.range)
    }
}

/// "expected an integer from 0 to 100, found `101`".
impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, found `{}`", self.range, self.v)
    }
}

/// The configuration error for `e`, a value of `what` outside its range, at `loc`:
/// "invalid `retries` of category `c`: expected an integer from 0 to 100, found `101`",
/// quoting the value as written (`99999999999999999999`, not the float YAML made of
/// it), with a help line when the value is a meaningless 0.
pub(crate) fn diagnostic(sources: &Sources, loc: Loc, what: &str, e: &OutOfRange) -> Diagnostic {
    let written = (loc.def_line == 0)
        .then(|| sources.text_at(loc))
        .flatten()
        .map(str::trim)
        .filter(|t| Number::parse(t).is_some());
    let found = written.map_or_else(|| e.v.to_string(), str::to_string);
    let d = sources.diag(
        loc,
        format!("invalid {what}: expected {}, found `{found}`", e.range),
    );
    match e.help() {
        Some(help) => d.with_help(help),
        None => d,
    }
}

/// A YAML or command-line number, as written: an integer of any size, or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer (any `i64` or `u64`, and more from the command line).
    Int(i128),
    /// A number with a fraction or an exponent, or an integer too large for `u64`.
    Float(f64),
}

impl Number {
    /// Parses a command-line value: an integer, else a finite or infinite float.
    pub fn parse(s: &str) -> Option<Number> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i128>() {
            return Some(Number::Int(i));
        }
        s.parse::<f64>().ok().map(Number::Float)
    }

    fn is_zero(&self) -> bool {
        match *self {
            Number::Int(i) => i == 0,
            Number::Float(f) => f == 0.0,
        }
    }
}

impl From<f64> for Number {
    fn from(f: f64) -> Self {
        Number::Float(f)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(v) => f.write_str(&fmt_num(v)),
        }
    }
}

/// A number for messages: whole numbers without `.0`, huge and tiny ones with an
/// exponent (`1e300`, not three hundred digits).
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() && v != 0.0 && (v.abs() >= 1e15 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Read where an integer is expected: accepts every YAML number (a type error only for
/// non-numbers), so that range checks, not serde, judge it.
impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E>(self, i: i64) -> Result<Number, E> {
                Ok(Number::Int(i128::from(i)))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Number, E> {
                Ok(Number::Int(i128::from(u)))
            }
            fn visit_i128<E>(self, i: i128) -> Result<Number, E> {
                Ok(Number::Int(i))
            }
            fn visit_u128<E: de::Error>(self, u: u128) -> Result<Number, E> {
                Ok(i128::try_from(u).map_or(Number::Float(u as f64), Number::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Number, E> {
                Ok(Number::Float(f))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i128) -> Number {
        Number::Int(i)
    }

    #[test]
    fn integer_ranges_are_inclusive() {
        assert_eq!(RETRIES.check_int(int(0)), Ok(0));
        assert_eq!(RETRIES.check_int(int(100)), Ok(100));
        assert!(RETRIES.check_int(int(101)).is_err());
        assert!(RETRIES.check_int(int(-1)).is_err());
        assert!(RETRIES.check_int(int(4_294_967_295)).is_err());
        assert!(RETRIES.check_int(int(u64::MAX.into())).is_err());
        assert_eq!(PARALLEL.check_int(int(100_000)), Ok(100_000));
        assert!(PARALLEL.check_int(int(0)).is_err());
        assert!(PARALLEL.check_int(int(4_611_686_018_427_387_904)).is_err());
        assert_eq!(ORDER.check_int(int(-1_000_000)), Ok(-1_000_000));
        assert_eq!(MEMORY_MB.check_int(int(1 << 30)), Ok(1 << 30));
        assert!(MEMORY_MB.check_int(int((1 << 30) + 1)).is_err());
    }

    #[test]
    fn whole_floats_count_as_integers_and_fractions_do_not() {
        assert_eq!(PARALLEL.check_int(Number::Float(1e3)), Ok(1000));
        assert!(PARALLEL.check_int(Number::Float(1.5)).is_err());
        assert!(PARALLEL.check_int(Number::Float(1e20)).is_err());
        assert!(PARALLEL.check_int(Number::Float(f64::NAN)).is_err());
        assert_eq!(PASS_RATE.check(Number::Float(99.5)), Ok(99.5));
        assert!(PASS_RATE.check(Number::Float(100.01)).is_err());
        assert!(CPU_PERCENT.check_int(Number::Float(50.5)).is_err());
    }

    #[test]
    fn durations_are_finite_positive_and_at_most_a_year() {
        let d = |r: &Range, v: f64| r.check_duration(Number::Float(v));
        assert_eq!(d(&TIMEOUT_SECONDS, 0.5), Ok(Duration::from_millis(500)));
        assert_eq!(
            d(&TIMEOUT_SECONDS, 31_536_000.0),
            Ok(Duration::from_secs(31_536_000))
        );
        assert!(d(&TIMEOUT_SECONDS, 31_536_000.5).is_err());
        assert_eq!(
            d(&TIMEOUT_MINUTES, 525_600.0),
            Ok(Duration::from_secs(31_536_000))
        );
        for bad in [0.0, -0.0, -1.0, 1e300, f64::INFINITY, f64::NAN, 525_601.0] {
            assert!(d(&TIMEOUT_MINUTES, bad).is_err(), "{bad}");
        }
        assert_eq!(d(&KILL_GRACE_SECONDS, 0.0), Ok(Duration::ZERO));
        assert_eq!(
            WAIT_MS.check_duration(int(250)),
            Ok(Duration::from_millis(250))
        );
        assert!(INTERVAL_MS.check_duration(int(9)).is_err());
        assert_eq!(
            RETENTION_DAYS.check_duration(int(2)),
            Ok(Duration::from_secs(2 * 86_400))
        );
    }

    #[test]
    fn messages_state_the_range() {
        let e = |r: &Range, v: Number| r.check(v).unwrap_err().to_string();
        assert_eq!(
            e(&RETRIES, int(4_294_967_295)),
            "expected an integer from 0 to 100, found `4294967295`"
        );
        assert_eq!(
            e(&TIMEOUT_MINUTES, Number::Float(1e300)),
            "expected a duration greater than 0 and at most 525600 minutes (365 days), found `1e300`"
        );
        assert_eq!(
            e(&KILL_GRACE_SECONDS, Number::Float(-2.0)),
            "expected a duration from 0 to 31536000 seconds (365 days), found `-2`"
        );
        assert_eq!(
            e(&MEMORY_MB, int(u64::MAX.into())),
            "expected a whole number of MiB from 1 to 1073741824 (1 PiB), found `18446744073709551615`"
        );
        assert_eq!(
            e(&OUTPUT_BYTES, int(-1)),
            "expected a whole number of bytes from 0 to 1073741824 (1 GiB), found `-1`"
        );
        assert_eq!(
            e(&INTERVAL_MS, int(0)),
            "expected a whole number of ms from 10 to 31536000000 (365 days), found `0`"
        );
        assert_eq!(
            e(&RETENTION_DAYS, int(400)),
            "expected a whole number of days from 0 to 365, found `400`"
        );
        assert_eq!(
            e(&PASS_RATE, Number::Float(150.0)),
            "expected a percentage from 0 to 100, found `150`"
        );
        assert_eq!(
            e(&CPU_PERCENT, int(101)),
            "expected a whole percentage from 1 to 100, found `101`"
        );
    }

    #[test]
    fn zero_says_why_it_is_meaningless() {
        let help = |r: &Range, v: Number| r.check(v).unwrap_err().help();
        assert!(help(&PARALLEL, int(0)).is_some());
        assert!(help(&TIMEOUT_SECONDS, Number::Float(0.0)).is_some());
        assert!(help(&MEMORY_MB, int(0)).is_some());
        assert!(help(&CPU_PERCENT, int(0)).is_some());
        assert_eq!(help(&PARALLEL, int(-1)), None);
        assert_eq!(help(&RETRIES, int(101)), None);
    }

    #[test]
    fn command_line_values() {
        assert_eq!(PARALLEL.parse_int("8"), Ok(8));
        assert_eq!(
            PARALLEL.parse_int("4611686018427387904"),
            Err("expected an integer from 1 to 100000".into())
        );
        assert_eq!(
            PARALLEL.parse_int("0"),
            Err("expected an integer from 1 to 100000".into())
        );
        assert_eq!(
            PARALLEL.parse_int("many"),
            Err("expected an integer from 1 to 100000".into())
        );
        assert_eq!(TIMEOUT_MINUTES.parse("1.5"), Ok(1.5));
        for bad in ["1e300", "0", "-1", "nan", "inf", "x"] {
            let e = TIMEOUT_MINUTES.parse(bad).unwrap_err();
            assert!(e.contains("at most 525600 minutes"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_range_is_sane() {
        for r in [
            RETRIES,
            PARALLEL,
            SHARDS,
            MEMORY_MB,
            MEMORY_ESTIMATE_MB,
            LOG_FILE_MB,
            OUTPUT_BYTES,
            FRAME_BYTES,
            CPU_PERCENT,
            PASS_RATE,
            PRESSURE_PERCENT,
            FAILURES,
            ORDER,
            QUEUE,
            NICE,
            LISTED,
            TIMEOUT_SECONDS,
            TIMEOUT_MINUTES,
            KILL_GRACE_SECONDS,
            WAIT_MS,
            INTERVAL_MS,
            STALE_AFTER_MS,
            RETENTION_DAYS,
            LINGER_SECONDS,
        ] {
            assert!(r.min < r.max, "{r:?}");
            // Exactly representable as f64, and within tokio's semaphore.
            assert!(r.max < 1 << 53 && r.min > -(1 << 53), "{r:?}");
            if let Some(per) = r.unit.seconds() {
                assert!(r.max as f64 * per <= MAX_SECONDS as f64, "{r:?}");
            }
        }
        assert!((MAX_PARALLEL as usize) < tokio::sync::Semaphore::MAX_PERMITS);
        assert!((MAX_QUEUE as usize) < tokio::sync::Semaphore::MAX_PERMITS);
        // retries + 1 attempts fit the u32 the executor counts in.
        assert!(MAX_RETRIES < i64::from(u32::MAX));
    }

    #[test]
    fn numbers_print_as_written() {
        assert_eq!(fmt_num(150.0), "150");
        assert_eq!(fmt_num(-5.0), "-5");
        assert_eq!(fmt_num(1.5), "1.5");
        assert_eq!(fmt_num(1e300), "1e300");
        assert_eq!(fmt_num(1e20), "1e20");
        assert_eq!(fmt_num(f64::INFINITY), "inf");
    }
}
