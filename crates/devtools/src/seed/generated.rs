//! Load-test loans and payments, generated on the seed's own core (the server has the other
//! one) in the order they are loaded: by date, as the service would have written them.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use uuid::{Builder, Uuid};

/// A loan as generated: applied for some time in the last eight years.
pub struct Loan {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub amount: Decimal,
    pub applied_at: DateTime<Utc>,
}

/// A repayment of `loans[loan]`, its `number`-th.
pub struct Payment {
    pub id: Uuid,
    pub loan: usize,
    pub number: u32,
    pub paid_at: DateTime<Utc>,
    pub amount: Decimal,
}

/// `per_customer` loans for each customer, dated uniformly between 2,900 days ago (eight or
/// nine calendar years before this one and this one, so eight or more yearly partitions) and yesterday (disbursed the day after,
/// so every repayment is in the past), for 10 to 499 million each; sorted by date.
pub fn loans(
    customers: &[Uuid],
    per_customer: u32,
    now: DateTime<Utc>,
    rng: &mut Rng,
) -> Vec<Loan> {
    let span = Duration::days(2899);
    let mut loans = Vec::with_capacity(customers.len() * per_customer as usize);
    for &customer_id in customers {
        for _ in 0..per_customer {
            let applied_at = now - Duration::days(1) - scaled(span, rng.unit());
            loans.push(Loan {
                id: uuid_v7(applied_at, rng),
                customer_id,
                amount: Decimal::from((10 + rng.below(490)) * 1_000_000),
                applied_at,
            });
        }
    }
    loans.sort_unstable_by_key(|loan| loan.applied_at);
    loans
}

/// `duration × share`, to the microsecond.
fn scaled(duration: Duration, share: f64) -> Duration {
    let micros = duration.num_microseconds().unwrap_or(i64::MAX) as f64;
    Duration::microseconds((micros * share) as i64)
}

/// A UUIDv7 of `at`, as the service makes ids for rows it writes at that moment.
pub fn uuid_v7(at: DateTime<Utc>, rng: &mut Rng) -> Uuid {
    let mut random = [0_u8; 10];
    random[..8].copy_from_slice(&rng.next().to_le_bytes());
    random[8..].copy_from_slice(&rng.next().to_le_bytes()[..2]);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// SplitMix64: fast, and plenty for lab data (nothing here is a secret).
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence `seed` decides.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n).unwrap_or(0)
    }
}
