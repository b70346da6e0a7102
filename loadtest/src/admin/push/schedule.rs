//! The push driver's timetable: which pushes go out when, numbered per user, and on
//! which lane.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::admin::push::body::{Job, PlannedPush};
use crate::admin::push::{planned_units, PushConfig, PushStats};
use crate::cli::PushMode;
use crate::rng::mix;

/// Where jobs go: one queue that every lane takes from, or one queue per lane with each
/// user's pushes always on lane `user % lanes`, so that they reach the server in the
/// order of their per-user sequence numbers (one request in flight per lane).
pub struct Dispatch {
    queues: Vec<mpsc::Sender<Job>>,
}

impl Dispatch {
    pub fn new(queues: Vec<mpsc::Sender<Job>>) -> Self {
        Dispatch { queues }
    }

    /// Queues `job` (split by lane when there is one queue per lane); false once the
    /// lanes are gone.
    async fn send(&self, job: Job) -> bool {
        let n = self.queues.len();
        if n == 1 {
            return self.queues[0].send(job).await.is_ok();
        }
        let mut parts = vec![Job::default(); n];
        for push in job.pushes {
            parts[(push.user % n as u64) as usize].pushes.push(push);
        }
        for (queue, part) in self.queues.iter().zip(parts) {
            if !part.pushes.is_empty() && queue.send(part).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The next per-user sequence number of every user, in the order pushes are planned.
struct UserSeqs(Vec<u64>);

impl UserSeqs {
    fn next(&mut self, user: u64) -> u64 {
        let i = user.saturating_sub(1) as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
        self.0[i] - 1
    }
}

/// Queues the run's jobs, each at its due time, until all are queued, the lanes are gone
/// or `stats.stop` is set.
pub async fn schedule(cfg: &PushConfig, stats: &PushStats, dispatch: &Dispatch, start: Instant) {
    let at = |unit: u64| start + Duration::from_secs_f64(unit as f64 / cfg.rate);
    let mut seqs = UserSeqs(Vec::new());
    let units = planned_units(cfg);
    let users = cfg.users.max(1);
    let b = cfg.batch_size.max(1);
    match cfg.mode {
        PushMode::RoundRobin | PushMode::Random => {
            let mut seq = 0u64;
            while seq < units {
                let n = b.min(units - seq);
                let pushes = (seq..seq + n)
                    .map(|s| {
                        let user = match cfg.mode {
                            PushMode::Random => mix(s ^ 0x5eed) % users + 1,
                            _ => s % users + 1,
                        };
                        planned(user, s, &mut seqs)
                    })
                    .collect();
                if !send_at(Job { pushes }, at(seq), stats, dispatch).await {
                    return;
                }
                seq += n;
            }
        }
        PushMode::Fanout => {
            for event in 0..units {
                let mut first = 1u64;
                while first <= users {
                    let last = (first + b - 1).min(users);
                    let pushes = (first..=last)
                        .map(|user| planned(user, event, &mut seqs))
                        .collect();
                    if !send_at(Job { pushes }, at(event), stats, dispatch).await {
                        return;
                    }
                    first = last + 1;
                }
            }
        }
    }
}

fn planned(user: u64, seq: u64, seqs: &mut UserSeqs) -> PlannedPush {
    PlannedPush {
        user,
        seq,
        user_seq: seqs.next(user),
    }
}

/// Queues `job` at `due` (`late_jobs` counts those more than 100 ms late); false when
/// the driver is to stop.
async fn send_at(job: Job, due: Instant, stats: &PushStats, dispatch: &Dispatch) -> bool {
    sleep_until(due).await;
    if stats.stop.load(Relaxed) {
        return false;
    }
    if Instant::now() > due + Duration::from_millis(100) {
        stats.late_jobs.fetch_add(1, Relaxed);
    }
    dispatch.send(job).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_user_stays_on_its_lane_in_order() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel::<Job>(8)).unzip();
        let dispatch = Dispatch::new(txs);
        let mut seqs = UserSeqs(Vec::new());
        for round in 0..2 {
            let pushes = (1..=4).map(|u| planned(u, round, &mut seqs)).collect();
            assert!(dispatch.send(Job { pushes }).await);
        }
        for (lane, rx) in rxs.iter_mut().enumerate() {
            let mut got = Vec::new();
            while let Ok(job) = rx.try_recv() {
                got.extend(job.pushes.iter().map(|p| (p.user, p.user_seq)));
            }
            let want: Vec<(u64, u64)> = (0..2)
                .flat_map(|s| {
                    (1..=4u64)
                        .filter(|u| u % 3 == lane as u64)
                        .map(move |u| (u, s))
                })
                .collect();
            assert_eq!(got, want, "lane {lane}");
        }
    }

    #[test]
    fn user_sequence_numbers_count_per_user() {
        let mut seqs = UserSeqs(Vec::new());
        let got: Vec<u64> = [2, 1, 2, 2, 5, 1].iter().map(|&u| seqs.next(u)).collect();
        assert_eq!(got, [0, 0, 1, 2, 0, 1]);
    }
}
