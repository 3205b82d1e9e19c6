//! Property tests of the scheduler itself (not only the schedule arithmetic): the real
//! `Scheduler` firing into a real store on a manual clock, restarted at random points, with tasks
//! paused and resumed. No agent runs here; a fired run is its inbound row and run record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use nanoclaw_host::clock::{Clock, ManualClock};
use nanoclaw_host::config::Config;
use nanoclaw_host::tasks::Scheduler;
use nanoclaw_schedule::{Schedule, parse_tz};
use nanoclaw_store::{Group, NewGroup, SessionMode, Store, TaskRunRow};
use proptest::prelude::*;

const ZONES: [&str; 5] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

struct World {
    store: Store,
    clock: Arc<ManualClock>,
    config: Config,
    group: Group,
    chat_id: i64,
}

fn world(zone: &str, start: DateTime<Utc>, late_after_secs: u64) -> World {
    let store = Store::open_in_memory().unwrap();
    let mut config = Config {
        timezone: zone.into(),
        ..Config::default()
    };
    config.scheduler.late_after_secs = late_after_secs;
    let (group, chat_id) = block(async {
        let group = store
            .ensure_group(NewGroup {
                name: "Main".into(),
                folder: "main".into(),
                is_main: true,
                ..NewGroup::default()
            })
            .await
            .unwrap();
        let chat = store
            .ensure_chat("terminal", "local", "T", false)
            .await
            .unwrap();
        store
            .wire(
                chat.id,
                &group.id,
                nanoclaw_store::WiringOptions::new(false, SessionMode::Shared),
            )
            .await
            .unwrap();
        (group, chat.id)
    });
    World {
        store,
        clock: Arc::new(ManualClock::new(start)),
        config,
        group,
        chat_id,
    }
}

impl World {
    /// A fresh scheduler over the same store and clock: what a host restart gives.
    fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.store.clone(), self.clock.clone(), &self.config)
    }
}

fn runs_in_order(mut runs: Vec<TaskRunRow>) -> Vec<TaskRunRow> {
    runs.sort_by_key(|r| r.scheduled_for);
    runs
}

fn start_time() -> impl Strategy<Value = DateTime<Utc>> {
    // 2024-01-01 .. 2030-01-01
    (1_704_067_200i64..1_893_456_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// With steps that are never "late", every fire time of a cron runs exactly once — across
    /// restarts, DST changes and month ends — in the schedule's own order.
    #[test]
    fn every_fire_time_runs_exactly_once_across_restarts(
        zone in prop::sample::select(ZONES.to_vec()),
        start in start_time(),
        cron in prop::sample::select(vec!["30 2 * * *", "0 * * * *", "0 9 * * 1-5", "0 0 L * *", "*/30 1-3 * * *"]),
        steps in prop::collection::vec((60u64..6 * 3600, any::<bool>()), 20..80),
    ) {
        // Nothing counts as late, so nothing collapses: each fire time must run.
        let w = world(zone, start, 10 * 365 * 86_400);
        let mut scheduler = w.scheduler();
        let task = block(scheduler.create(&w.group, w.chat_id, "p".into(), cron, None, false, "t".into())).unwrap();
        for (secs, restart) in &steps {
            w.clock.advance(Duration::from_secs(*secs));
            if *restart {
                scheduler = w.scheduler();
            }
            block(scheduler.fire_due()).unwrap();
            let t = block(w.store.task(task.id.clone())).unwrap().unwrap();
            prop_assert!(t.next_run_at.unwrap() > w.clock.now().timestamp_millis(), "caught up after each pass");
        }
        let tz = parse_tz(zone).unwrap();
        let schedule = Schedule::cron(cron).unwrap();
        let mut expected = Vec::new();
        let mut t = schedule.next_after(start, tz);
        while let Some(at) = t.filter(|at| *at <= w.clock.now()) {
            expected.push(at.timestamp_millis());
            t = schedule.next_after(at, tz);
        }
        let runs = runs_in_order(block(w.store.task_runs(task.id.clone(), 100_000)).unwrap());
        let got: Vec<i64> = runs.iter().map(|r| r.scheduled_for).collect();
        prop_assert_eq!(got, expected);
    }

    /// After downtime longer than `late_after`, the missed fire times collapse into ONE late run,
    /// and the interval keeps its grid (anchor + k·every): nothing drifts, nothing repeats.
    #[test]
    fn intervals_keep_their_grid_and_collapse_missed_runs(
        zone in prop::sample::select(ZONES.to_vec()),
        start in start_time(),
        every_min in 1u64..720,
        downtimes in prop::collection::vec(0u64..3 * 86_400, 1..12),
    ) {
        let w = world(zone, start, 60);
        let text = format!("every {every_min}m");
        let task = block(w.scheduler().create(&w.group, w.chat_id, "p".into(), &text, None, false, "t".into())).unwrap();
        let every_ms = (every_min * 60_000) as i64;
        let anchor = start.timestamp_millis();
        let mut passes = 0;
        for down in &downtimes {
            w.clock.advance(Duration::from_secs(*down));
            let before = block(w.store.task_runs(task.id.clone(), 100_000)).unwrap().len();
            let due = block(w.store.task(task.id.clone())).unwrap().unwrap().next_run_at.unwrap();
            block(w.scheduler().fire_due()).unwrap();
            passes += 1;
            let after = block(w.store.task_runs(task.id.clone(), 100_000)).unwrap().len();
            if due <= w.clock.now().timestamp_millis() {
                prop_assert_eq!(after, before + 1, "one run per pass that found the task due");
            } else {
                prop_assert_eq!(after, before);
            }
        }
        let runs = runs_in_order(block(w.store.task_runs(task.id.clone(), 100_000)).unwrap());
        prop_assert!(runs.len() <= passes);
        for pair in runs.windows(2) {
            prop_assert!(pair[0].scheduled_for < pair[1].scheduled_for);
        }
        for r in &runs {
            prop_assert_eq!((r.scheduled_for - anchor) % every_ms, 0, "on the grid: {:?}", r);
        }
        let t = block(w.store.task(task.id.clone())).unwrap().unwrap();
        let next = t.next_run_at.unwrap();
        prop_assert_eq!((next - anchor) % every_ms, 0);
        prop_assert!(next > w.clock.now().timestamp_millis());
        prop_assert!(next <= w.clock.now().timestamp_millis() + every_ms);
    }

    /// A paused task fires nothing; resumed, it continues with the first fire time after the
    /// resume (runs missed while paused are not made up).
    #[test]
    fn pause_and_resume(
        zone in prop::sample::select(ZONES.to_vec()),
        start in start_time(),
        cron in prop::sample::select(vec!["30 2 * * *", "0 9 * * 1-5", "15 */2 * * *"]),
        before_pause in 60u64..3 * 86_400,
        paused_for in 60u64..10 * 86_400,
    ) {
        let w = world(zone, start, 10 * 365 * 86_400);
        let scheduler = w.scheduler();
        let task = block(scheduler.create(&w.group, w.chat_id, "p".into(), cron, None, false, "t".into())).unwrap();
        w.clock.advance(Duration::from_secs(before_pause));
        block(scheduler.fire_due()).unwrap();
        let paused_at = w.clock.now();
        let t = block(w.store.task(task.id.clone())).unwrap().unwrap();
        block(scheduler.pause(&t)).unwrap();
        w.clock.advance(Duration::from_secs(paused_for));
        block(scheduler.fire_due()).unwrap();
        let runs = block(w.store.task_runs(task.id.clone(), 100_000)).unwrap();
        prop_assert!(runs.iter().all(|r| r.scheduled_for <= paused_at.timestamp_millis()), "nothing ran while paused");
        let t = block(w.store.task(task.id.clone())).unwrap().unwrap();
        let resumed = block(scheduler.resume(&t)).unwrap();
        let tz = parse_tz(zone).unwrap();
        let expected = Schedule::cron(cron).unwrap().next_after(w.clock.now(), tz).unwrap();
        prop_assert_eq!(resumed.next_run_at, Some(expected.timestamp_millis()));
        block(scheduler.fire_due()).unwrap();
        prop_assert_eq!(block(w.store.task_runs(task.id.clone(), 100_000)).unwrap().len(), runs.len(), "no make-up runs");
    }
}
