//! A small seedable random number generator for the data pipeline: xoshiro256** (Blackman and
//! Vigna) seeded through splitmix64. Everything the loaders draw (shuffles, augmentations,
//! sentence choices, the synthetic corpus) comes from here, so a run is a pure function of its
//! seed. [`Rng::fork`] derives an independent stream per sample, which keeps results
//! independent of which thread handles which sample, and when.

/// One step of splitmix64: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A xoshiro256** generator. Not for cryptography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is four successive splitmix64 outputs from `seed` (never all
    /// zero, as xoshiro needs).
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// An independent generator for `stream`, derived from this one's state without advancing
    /// it: `rng.fork(a).fork(b)` is the same generator however often, and in whatever order,
    /// other streams were forked or drawn from their own forks.
    pub fn fork(&self, stream: u64) -> Rng {
        let mut h = stream;
        for &word in &self.s {
            h ^= word;
            h = splitmix64(&mut h);
        }
        Rng::new(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1), with 24 random bits.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in [lo, hi] (hi itself only through rounding); `lo` when the range is empty.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        (lo + (hi - lo) * self.f32()).clamp(lo.min(hi), hi.max(lo))
    }

    /// Uniform in [lo, hi] (hi itself only through rounding), in f64.
    pub fn uniform_f64(&mut self, lo: f64, hi: f64) -> f64 {
        (lo + (hi - lo) * self.f64()).clamp(lo.min(hi), hi.max(lo))
    }

    /// Uniform integer in [0, n), without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// When `n` is 0 (there is nothing to choose from).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): the range is empty");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = self.next_u64() as u128 * n as u128;
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// True with probability `p` (never for p <= 0, always for p >= 1).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A standard normal sample (Box-Muller; the second value of the pair is not kept, so every
    /// call costs two uniforms and the stream stays simple to reason about).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // in (0, 1]: the log stays finite
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniformly chosen element.
    ///
    /// # Panics
    /// When `items` is empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "Rng::choose: nothing to choose from");
        &items[self.below(items.len() as u64) as usize]
    }

    /// Shuffles `items` in place (Fisher-Yates): every permutation equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_outputs() {
        // splitmix64 from 0, and xoshiro256** from the state [1, 2, 3, 4], as published by the
        // algorithms' authors (and checked by rand_xoshiro's tests).
        let mut sm = 0u64;
        assert_eq!(splitmix64(&mut sm), 0xE220_A839_7B1D_CDAF);
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let want = [11520u64, 0, 1509978240, 1215971899390074240];
        for w in want {
            assert_eq!(rng.next_u64(), w);
        }
    }

    #[test]
    fn deterministic_and_forks_are_independent() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());

        let parent = Rng::new(3);
        let before = parent.clone();
        let mut f1 = parent.fork(1);
        let mut f1_again = parent.fork(1);
        let mut f2 = parent.fork(2);
        assert_eq!(parent, before, "fork does not advance the parent");
        let x1: Vec<u64> = (0..4).map(|_| f1.next_u64()).collect();
        let x1_again: Vec<u64> = (0..4).map(|_| f1_again.next_u64()).collect();
        let x2: Vec<u64> = (0..4).map(|_| f2.next_u64()).collect();
        assert_eq!(x1, x1_again);
        assert_ne!(x1, x2);
        assert_ne!(parent.fork(1).fork(2), parent.fork(2).fork(1));
    }

    #[test]
    fn distributions() {
        let mut rng = Rng::new(42);
        let n = 100_000;
        let (mut sum, mut sq) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let v = rng.normal();
            sum += v;
            sq += v * v;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "normal: {mean} {var}"
        );

        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[rng.below(7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );

        for _ in 0..10_000 {
            let u = rng.uniform(-2.0, 3.0);
            assert!((-2.0..=3.0).contains(&u));
            let f = rng.f32();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(rng.uniform(1.5, 1.5), 1.5);
        let hits = (0..10_000).filter(|_| rng.bernoulli(0.3)).count();
        assert!((2_800..3_200).contains(&hits), "{hits}");
        assert!(!(0..100).any(|_| rng.bernoulli(0.0)));
        assert!((0..100).all(|_| rng.bernoulli(1.0)));

        let mut v: Vec<usize> = (0..50).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
