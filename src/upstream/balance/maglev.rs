//! Consistent hashing with Maglev (Eisenbud et al., NSDI 2016).
//!
//! Why Maglev rather than a ring: a lookup is one table index, the table
//! spreads keys within a few percent of each backend's share, and adding or
//! removing one of N backends moves about 1/N of the keys. Every worker
//! (and restart, and ringlb instance) builds the same table from the ids.
//!
//! Build: each backend's preference list over the `M` slots is the
//! permutation `(offset + j * skip) mod M` with `offset` and `skip` from its
//! stable id (a hash of its address). Backends take turns claiming their next
//! free preferred slot until the table is full. Weights: each round a
//! backend's credit grows by its weight and it takes a turn per `max_weight`
//! of credit, so slots come out in proportion to weight.
//!
//! Pick: slot `mix(key) mod M`; if that backend is not eligible, walk the
//! table forward to the next eligible backend (the fallback for retries and
//! for down backends: keys of a down backend spread over the others in
//! table proportion, and every other key stays put). A request without a
//! key (header or cookie absent) takes the slot under a core-local cursor
//! that advances each pick, which spreads such requests by table share.
//!
//! Backends take their turns in the order of their ids, not of the config
//! list, so reordering the list changes nothing.
//!
//! Invariants: `M` is prime and at least `MIN_SLOTS_PER_BACKEND × n`, so the
//! permutation visits every slot; every slot holds a backend index `< n`;
//! the walk asks each backend at most once.

use super::hash::mix;
use super::{Balancer, PickContext};

/// Table size is the smallest prime here that is at least this many slots
/// per backend (the paper's guidance is M ≥ 100·N for ≤1% imbalance).
/// The smallest size is large on purpose: a change of `M` moves almost every
/// key, so `M` must not change when a backend is added to a small upstream.
/// It stays 16,381 (64 KiB per upstream per worker) up to 163 backends.
const MIN_SLOTS_PER_BACKEND: usize = 100;
const PRIMES: [usize; 7] = [16_381, 32_749, 65_521, 131_071, 262_139, 524_287, 1_048_573];

/// A worker's copy of one upstream's Maglev table.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<u32>,
    n: usize,
    cursor: usize,
    seen: Vec<bool>,
}

fn table_size(n: usize) -> usize {
    let want = n.saturating_mul(MIN_SLOTS_PER_BACKEND);
    PRIMES.into_iter().find(|&p| p >= want).unwrap_or(PRIMES[6])
}

impl Maglev {
    /// `ids[i]` and `weights[i]` describe backend `i`.
    pub fn new(ids: &[u64], weights: &[u32], start_offset: usize) -> Maglev {
        let n = ids.len().min(weights.len());
        let m = if n == 0 { 0 } else { table_size(n) };
        let perm: Vec<(usize, usize)> = ids[..n]
            .iter()
            .map(|&id| {
                let offset = (mix(id) % m as u64) as usize;
                let skip = (mix(id ^ 0x9e37_79b9_7f4a_7c15) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let weights: Vec<u64> = weights[..n].iter().map(|&w| u64::from(w.max(1))).collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1);
        let mut credit = vec![0u64; n];
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; m];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ids[i], i));
        let mut filled = 0;
        'fill: while filled < m {
            for &i in &order {
                credit[i] += weights[i];
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    let (offset, skip) = perm[i];
                    let mut slot = (offset + next[i] * skip) % m;
                    while table[slot] != u32::MAX {
                        next[i] += 1;
                        slot = (offset + next[i] * skip) % m;
                    }
                    table[slot] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev {
            table,
            n,
            cursor: start_offset.wrapping_mul(7919).checked_rem(m).unwrap_or(0),
            seen: vec![false; n],
        }
    }

    /// The backend owning the key's slot, ignoring eligibility.
    pub fn owner(&self, key: u64) -> Option<usize> {
        let m = self.table.len();
        (m > 0).then(|| self.table[(mix(key) % m as u64) as usize] as usize)
    }
}

impl Balancer for Maglev {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = match ctx.key {
            Some(key) => (mix(key) % m as u64) as usize,
            None => {
                self.cursor = (self.cursor + 1) % m;
                self.cursor
            }
        };
        self.seen.iter_mut().for_each(|s| *s = false);
        let mut asked = 0;
        for step in 0..m {
            let b = self.table[(start + step) % m] as usize;
            if self.seen[b] {
                continue;
            }
            if (ctx.eligible)(b) {
                return Some(b);
            }
            self.seen[b] = true;
            asked += 1;
            if asked == self.n {
                break;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::hash::{backend_id, hash_bytes};
    use super::super::testing::pick;
    use super::*;

    fn ids(addrs: &[u16]) -> Vec<u64> {
        addrs
            .iter()
            .map(|p| backend_id(format!("10.0.0.1:{p}").parse().unwrap()))
            .collect()
    }

    fn owners(m: &Maglev, ports: &[u16], keys: u64) -> Vec<u16> {
        (0..keys)
            .map(|k| ports[m.owner(hash_bytes(&k.to_le_bytes())).unwrap()])
            .collect()
    }

    fn moved(a: &[u16], b: &[u16]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    }

    #[test]
    fn table_is_balanced() {
        let ports: Vec<u16> = (8000..8010).collect();
        let m = Maglev::new(&ids(&ports), &[1; 10], 0);
        let size = m.table.len();
        assert_eq!(size, 16_381);
        let mut counts = [0usize; 10];
        m.table.iter().for_each(|&b| counts[b as usize] += 1);
        let share = size as f64 / 10.0;
        for c in counts {
            assert!((c as f64 - share).abs() / share < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn weights_scale_the_share() {
        let m = Maglev::new(&ids(&[1, 2]), &[3, 1], 0);
        let zeros = m.table.iter().filter(|&&b| b == 0).count() as f64;
        let frac = zeros / m.table.len() as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn removing_or_adding_one_moves_about_one_nth() {
        let build = |ports: &[u16]| Maglev::new(&ids(ports), &vec![1; ports.len()], 0);
        let ten: Vec<u16> = (8000..8010).collect();
        let before = owners(&build(&ten), &ten, 20_000);
        let nine: Vec<u16> = ten.iter().copied().filter(|&p| p != 8003).collect();
        let frac = moved(&before, &owners(&build(&nine), &nine, 20_000));
        assert!(frac <= 0.1 + 0.06, "removing one of 10 moved {frac}");
        let eleven: Vec<u16> = (8000..8011).collect();
        let frac = moved(&before, &owners(&build(&eleven), &eleven, 20_000));
        assert!(frac <= 1.0 / 11.0 + 0.06, "adding an 11th moved {frac}");
    }

    #[test]
    fn reorder_changes_nothing() {
        let ports = [8001, 8002, 8003];
        let a = owners(&Maglev::new(&ids(&ports), &[1; 3], 0), &ports, 2_000);
        let rev = [8003, 8002, 8001];
        let b = owners(&Maglev::new(&ids(&rev), &[1; 3], 0), &rev, 2_000);
        assert!(a == b, "reordering moved keys");
    }

    #[test]
    fn ineligible_owner_falls_back_and_others_stay() {
        let ports: Vec<u16> = (8000..8005).collect();
        let mut m = Maglev::new(&ids(&ports), &[1; 5], 0);
        for k in 0..2_000u64 {
            let key = hash_bytes(&k.to_le_bytes());
            let owner = m.owner(key).unwrap();
            let mut pick = |e: &dyn Fn(usize) -> bool| pick(&mut m, &[], Some(key), e);
            assert_eq!(pick(&|_| true), Some(owner));
            let got = pick(&|i| i != 2).unwrap();
            assert_ne!(got, 2);
            if owner != 2 {
                assert_eq!(got, owner, "keys of other backends stay");
            }
            // Retry fallback: excluding the first choice gives another one.
            let got = pick(&|i| i != owner).unwrap();
            assert_ne!(got, owner);
        }
        let ctx = PickContext {
            backends: &[],
            key: Some(1),
            eligible: &|_| false,
        };
        assert_eq!(m.pick(&ctx), None);
    }

    #[test]
    fn keyless_requests_spread() {
        let mut m = Maglev::new(&ids(&[1, 2, 3]), &[1; 3], 0);
        let mut counts = [0; 3];
        for _ in 0..3_000 {
            counts[m.next(&|_| true).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..=1_100).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(Maglev::new(&[], &[], 0).next(&|_| true), None);
    }
}
