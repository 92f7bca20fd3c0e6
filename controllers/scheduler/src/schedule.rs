//! A workflow's cron schedule read in its time zone: which due times fell in a window, and the next one.
//!
//! Semantics are Vixie cron's (as specified by OCPS and implemented by `croner`), evaluated on the real time
//! line:
//! - a fixed-time schedule (`30 2 * * *`) whose wall-clock time is skipped by a DST gap runs once, at the
//!   first wall-clock minute after the gap (03:00 on a spring-forward night in Europe/Berlin);
//! - a fixed-time schedule whose wall-clock time happens twice (fall-back) runs once, at the first;
//! - an interval schedule (`*/15 * * * *`, `0 * * * *`) follows the real clock: no runs in a gap, and runs in
//!   both passes of a repeated hour, each at a different instant (so each with its own run name).

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// How many due times one look-back counts before it stops counting (an operator down for a year with a
/// per-minute schedule must not stall a reconcile). `missed` saturates there for that gap.
pub const COUNT_LIMIT: u32 = 1000;

/// A parsed schedule and the zone it is read in.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

/// The due times in a window `(after, until]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// The latest due time in the window.
    pub latest: Timestamp,
    /// Due times in the window before `latest`, counted up to [`COUNT_LIMIT`].
    pub earlier: u32,
}

impl Schedule {
    /// Parses a five-field cron expression or macro (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`,
    /// `@yearly`, `@annually`) in the IANA zone `time_zone` (UTC when `None`).
    ///
    /// # Errors
    /// A message for the user naming what is wrong: the expression, the zone, or a schedule that is never due.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let zone = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?,
        };
        let expression = expression.trim();
        // croner knows every macro Kubernetes CronJobs accept except this alias.
        let expression = if expression.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            expression
        };
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|e| format!("invalid schedule {expression:?}: {e}"))?;
        let schedule = Self { cron, zone };
        // A pattern such as `0 0 31 2 *` parses but never comes due; say so now rather than never run.
        let epoch = Timestamp::UNIX_EPOCH.to_zoned(schedule.zone.clone());
        if schedule.cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!("schedule {expression:?} is never due"));
        }
        Ok(schedule)
    }

    fn zoned(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.zone.clone())
    }

    /// The first due time strictly after `t`.
    #[must_use]
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&self.zoned(t), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The due times in `(after, until]`, or `None` when there are none.
    #[must_use]
    pub fn due_between(&self, after: Timestamp, until: Timestamp) -> Option<Due> {
        let mut latest = None;
        let mut earlier = 0u32;
        for zoned in self.cron.iter_after(self.zoned(after)) {
            let t = zoned.timestamp();
            if t > until {
                break;
            }
            if latest.is_some() {
                earlier += 1;
            }
            latest = Some(t);
            if earlier >= COUNT_LIMIT {
                // Stop counting; find the latest directly.
                latest = self
                    .cron
                    .find_previous_occurrence(&self.zoned(until), true)
                    .ok()
                    .map(|z| z.timestamp())
                    .filter(|&l| l > t)
                    .or(latest);
                break;
            }
        }
        latest.map(|latest| Due { latest, earlier })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn all_due(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        let mut out = vec![];
        let mut t = ts(from);
        while let Some(next) = s.next_after(t) {
            if next > ts(to) {
                break;
            }
            out.push(next.to_string());
            t = next;
        }
        out
    }

    #[test]
    fn macros_and_five_fields_parse_seconds_and_years_do_not() {
        for ok in [
            "*/5 * * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ] {
            assert!(Schedule::parse(ok, None).is_ok(), "{ok}");
        }
        assert!(
            Schedule::parse("0 30 2 * * *", None).is_err(),
            "six fields (seconds) are refused"
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * *", None).is_err());
        let never = Schedule::parse("0 0 31 2 *", None).unwrap_err();
        assert!(never.contains("never due"), "{never}");
    }

    #[test]
    fn unknown_zone_is_an_error_naming_it() {
        let err = Schedule::parse("@hourly", Some("Mars/Olympus_Mons")).unwrap_err();
        assert!(err.contains("Mars/Olympus_Mons"), "{err}");
    }

    #[test]
    fn midnight_is_daily() {
        let s = Schedule::parse("@midnight", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T10:00:00Z")),
            Some(ts("2025-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn schedule_is_read_in_its_zone() {
        let s = Schedule::parse("0 9 * * *", Some("Asia/Tokyo")).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T10:00:00Z")),
            Some(ts("2025-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_fixed_time_runs_once_right_after_the_gap() {
        // 2025-03-30: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that night.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let due = all_due(&s, "2025-03-29T00:00:00Z", "2025-03-31T12:00:00Z");
        assert_eq!(
            due,
            [
                "2025-03-29T01:30:00Z", // 02:30 CET
                "2025-03-30T01:00:00Z", // 03:00 CEST, the first minute after the gap
                "2025-03-31T00:30:00Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fixed_time_runs_once() {
        // 2025-10-26: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let due = all_due(&s, "2025-10-25T12:00:00Z", "2025-10-27T12:00:00Z");
        assert_eq!(due, ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]);
        // Looking back over the repeated hour finds the single run too.
        let d = s
            .due_between(ts("2025-10-25T12:00:00Z"), ts("2025-10-26T02:00:00Z"))
            .unwrap();
        assert_eq!(
            d,
            Due {
                latest: ts("2025-10-26T00:30:00Z"),
                earlier: 0
            }
        );
    }

    #[test]
    fn berlin_interval_schedules_follow_the_real_clock() {
        let s = Schedule::parse("*/30 * * * *", Some("Europe/Berlin")).unwrap();
        // Spring forward: 01:30 CET then 03:00 CEST; nothing in the gap, nothing twice.
        assert_eq!(
            all_due(&s, "2025-03-30T00:15:00Z", "2025-03-30T01:45:00Z"),
            [
                "2025-03-30T00:30:00Z",
                "2025-03-30T01:00:00Z",
                "2025-03-30T01:30:00Z"
            ]
        );
        // Fall back: 02:00, 02:30 CEST and again 02:00, 02:30 CET, each at its own instant.
        assert_eq!(
            all_due(&s, "2025-10-25T23:45:00Z", "2025-10-26T01:45:00Z"),
            [
                "2025-10-26T00:00:00Z",
                "2025-10-26T00:30:00Z",
                "2025-10-26T01:00:00Z",
                "2025-10-26T01:30:00Z"
            ]
        );
    }

    #[test]
    fn due_between_is_exclusive_inclusive_and_counts_the_earlier() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            s.due_between(ts("2025-01-01T10:00:00Z"), ts("2025-01-01T10:04:59Z")),
            None
        );
        assert_eq!(
            s.due_between(ts("2025-01-01T10:00:00Z"), ts("2025-01-01T10:05:00Z")),
            Some(Due {
                latest: ts("2025-01-01T10:05:00Z"),
                earlier: 0
            })
        );
        assert_eq!(
            s.due_between(ts("2025-01-01T10:00:00Z"), ts("2025-01-01T10:32:00Z")),
            Some(Due {
                latest: ts("2025-01-01T10:30:00Z"),
                earlier: 5
            })
        );
    }

    #[test]
    fn a_long_gap_stops_counting_but_still_finds_the_latest() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let d = s
            .due_between(ts("2024-01-01T00:00:00Z"), ts("2025-01-01T00:00:30Z"))
            .unwrap();
        assert_eq!(d.latest, ts("2025-01-01T00:00:00Z"));
        assert_eq!(d.earlier, COUNT_LIMIT);
    }
}
