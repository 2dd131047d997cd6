//! The routing decision, pure: given a model's targets, how each upstream
//! has fared and a source of randomness, the order to try them in (README,
//! "Several upstreams"). The I/O around it stays in `routing`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Cooldown, Strategy};

/// One target as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) weight: u32,
    /// Skipped while another target is usable.
    pub(crate) cooling: bool,
    /// Moving average of its time to first token, in seconds.
    pub(crate) ttft: Option<f64>,
}

/// The indices of `candidates` in the order to try them: usable ones by
/// `strategy`, then, only when every one is cooling, all of them.
pub(crate) fn order(
    strategy: Strategy,
    candidates: &[Candidate],
    random: &mut dyn FnMut() -> f64,
) -> Vec<usize> {
    let usable: Vec<usize> = (0..candidates.len())
        .filter(|&index| !candidates[index].cooling)
        .collect();
    let pool = if usable.is_empty() {
        (0..candidates.len()).collect()
    } else {
        usable
    };
    match strategy {
        Strategy::Fallback => pool,
        Strategy::Weighted => weighted(pool, candidates, random),
        Strategy::Latency => {
            // A random key per candidate breaks ties; unmeasured upstreams
            // count as fastest, so that each is tried and measured.
            let mut keyed: Vec<(f64, f64, usize)> = pool
                .into_iter()
                .map(|index| (candidates[index].ttft.unwrap_or(0.0), random(), index))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            keyed.into_iter().map(|(_, _, index)| index).collect()
        }
    }
}

fn weighted(
    mut pool: Vec<usize>,
    candidates: &[Candidate],
    random: &mut dyn FnMut() -> f64,
) -> Vec<usize> {
    let mut ordered = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let total: u64 = pool
            .iter()
            .map(|&index| u64::from(candidates[index].weight.max(1)))
            .sum();
        let mut pick = (random() * total as f64) as u64;
        let mut chosen = pool.len() - 1;
        for (position, &index) in pool.iter().enumerate() {
            let weight = u64::from(candidates[index].weight.max(1));
            if pick < weight {
                chosen = position;
                break;
            }
            pick -= weight;
        }
        ordered.push(pool.remove(chosen));
    }
    ordered
}

/// How one upstream has fared: what cooling and the latency strategy read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Health {
    failures_in_a_row: u32,
    cooling_until: Option<Instant>,
    ttft: Option<f64>,
    /// Requests that went to another upstream first since this one was
    /// last measured.
    passed_over: u32,
}

impl Health {
    /// The weight of the latest time to first token in the moving average.
    const SMOOTHING: f64 = 0.3;
    /// How much quicker an unmeasured-since estimate looks per request.
    const STALENESS: f64 = 0.8;

    pub(crate) fn cooling(&self, now: Instant) -> bool {
        self.cooling_until.is_some_and(|until| now < until)
    }

    /// The moving average of its time to first token, made to look a
    /// little quicker for every request that went elsewhere first: a slow
    /// upstream is tried again now and then, so that it wins its traffic
    /// back once it has recovered.
    pub(crate) fn ttft(&self) -> Option<f64> {
        self.ttft
            .map(|ttft| ttft * Self::STALENESS.powi(self.passed_over.min(100) as i32))
    }

    /// Another upstream was tried first.
    pub(crate) fn passed_over(&mut self) {
        self.passed_over = self.passed_over.saturating_add(1);
    }

    pub(crate) fn failed(&mut self, now: Instant, cooldown: Cooldown) {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if self.failures_in_a_row >= cooldown.after {
            self.cooling_until = Some(now + cooldown.length);
        }
    }

    pub(crate) fn answered(&mut self, ttft: Duration) {
        self.failures_in_a_row = 0;
        self.cooling_until = None;
        self.passed_over = 0;
        let latest = ttft.as_secs_f64();
        self.ttft = Some(match self.ttft {
            Some(average) => average + Self::SMOOTHING * (latest - average),
            None => latest,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(weight: u32, cooling: bool, ttft: Option<f64>) -> Candidate {
        Candidate {
            weight,
            cooling,
            ttft,
        }
    }

    /// A name, a strategy, its candidates, the "random" draws and the order.
    type Case = (
        &'static str,
        Strategy,
        Vec<Candidate>,
        &'static [f64],
        Vec<usize>,
    );

    /// A fixed sequence of "random" numbers, repeated.
    fn script(values: &'static [f64]) -> impl FnMut() -> f64 {
        let mut next = 0;
        move || {
            let value = values[next % values.len()];
            next += 1;
            value
        }
    }

    #[test]
    fn the_order_follows_the_strategy_and_skips_cooling_targets() {
        let three = [
            candidate(1, false, Some(0.9)),
            candidate(3, false, Some(0.2)),
            candidate(1, false, None),
        ];
        let cases: [Case; 7] = [
            (
                "fallback keeps the order",
                Strategy::Fallback,
                three.to_vec(),
                &[0.5],
                vec![0, 1, 2],
            ),
            (
                "fallback skips a cooling target",
                Strategy::Fallback,
                vec![candidate(1, true, None), three[1], three[2]],
                &[0.5],
                vec![1, 2],
            ),
            (
                "every target cooling: all of them, in order",
                Strategy::Fallback,
                vec![candidate(1, true, None), candidate(1, true, None)],
                &[0.5],
                vec![0, 1],
            ),
            // Weights 1, 3, 1 (total 5): 0.1*5 = 0.5 falls in the first, 0.5*5 in the second.
            (
                "weighted: a low draw picks the first",
                Strategy::Weighted,
                three.to_vec(),
                &[0.1, 0.0, 0.0],
                vec![0, 1, 2],
            ),
            (
                "weighted: a middle draw picks the heavy one",
                Strategy::Weighted,
                three.to_vec(),
                &[0.5, 0.9, 0.0],
                vec![1, 2, 0],
            ),
            (
                "latency: unmeasured first, then fastest",
                Strategy::Latency,
                three.to_vec(),
                &[0.5],
                vec![2, 1, 0],
            ),
            (
                "latency: a tie is broken at random",
                Strategy::Latency,
                vec![
                    candidate(1, false, Some(0.2)),
                    candidate(1, false, Some(0.2)),
                ],
                &[0.9, 0.1],
                vec![1, 0],
            ),
        ];
        for (name, strategy, candidates, draws, expected) in cases {
            assert_eq!(
                order(strategy, &candidates, &mut script(draws)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn weighted_shares_follow_the_weights() {
        let candidates = [candidate(3, false, None), candidate(1, false, None)];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let firsts = (0..4_000)
            .filter(|_| order(Strategy::Weighted, &candidates, &mut random)[0] == 0)
            .count();
        assert!((2_800..3_200).contains(&firsts), "{firsts} of 4000");
    }

    #[test]
    fn failures_in_a_row_start_a_cooldown_and_an_answer_ends_it() {
        let cooldown = Cooldown {
            after: 3,
            length: Duration::from_secs(30),
        };
        let now = Instant::now();
        let mut health = Health::default();
        health.failed(now, cooldown);
        health.failed(now, cooldown);
        assert!(!health.cooling(now));
        health.failed(now, cooldown);
        assert!(health.cooling(now + Duration::from_secs(29)));
        assert!(!health.cooling(now + Duration::from_secs(30)));
        health.answered(Duration::from_millis(200));
        assert!(!health.cooling(now));
        health.answered(Duration::from_millis(1200));
        let average = health.ttft().unwrap_or_default();
        assert!((average - 0.5).abs() < 1e-9, "{average}");
        health.passed_over();
        health.passed_over();
        let stale = health.ttft().unwrap_or_default();
        assert!((stale - 0.5 * 0.64).abs() < 1e-9, "{stale}");
        health.answered(Duration::from_millis(500));
        assert!((health.ttft().unwrap_or_default() - 0.5).abs() < 1e-9);
    }
}
